"""A small Phoenix Channels client over aiohttp, for the tests of the live API."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

SOCKET_PATH = "/socket/websocket"
EVENTS_URL = "/api/v1/telemetry/events"
# Only a guard against a test that would otherwise hang: nothing asserts on time.
RECEIVE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Received:
    join_ref: Any
    ref: Any
    topic: str
    event: str
    payload: Any


class PhoenixClient:
    """Sends Phoenix messages and waits for given ones, keeping the others for later waits."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, vsn: str = "2.0.0") -> None:
        self.ws = ws
        self.vsn = vsn
        self._ref = 0
        self._unread: list[Received] = []

    async def send(self, topic: str, event: str, payload: Any = None, join_ref: Any = None) -> str:
        self._ref += 1
        ref = str(self._ref)
        body = {} if payload is None else payload
        if self.vsn == "2.0.0":
            await self.ws.send_str(json.dumps([join_ref, ref, topic, event, body]))
        else:
            await self.ws.send_str(json.dumps({"topic": topic, "event": event, "payload": body, "ref": ref}))
        return ref

    async def join(self, topic: str, payload: Any = None) -> tuple[str, Received]:
        """Join `topic`; returns the join ref and the reply."""
        ref = await self.send(topic, "phx_join", payload, join_ref=str(self._ref + 1))
        return ref, await self.reply(ref)

    async def request(self, topic: str, event: str, payload: Any = None, join_ref: Any = None) -> Received:
        return await self.reply(await self.send(topic, event, payload, join_ref))

    async def reply(self, ref: str) -> Received:
        return await self.expect(lambda m: m.event == "phx_reply" and m.ref == ref)

    async def push(self, topic: str, event: str) -> Received:
        return await self.expect(lambda m: m.topic == topic and m.event == event)

    async def expect(self, wanted: Callable[[Received], bool]) -> Received:
        for n, message in enumerate(self._unread):
            if wanted(message):
                return self._unread.pop(n)
        while True:
            message = await self.receive()
            if wanted(message):
                return message
            self._unread.append(message)

    async def receive(self) -> Received:
        frame = await self.ws.receive(timeout=RECEIVE_TIMEOUT)
        assert frame.type == aiohttp.WSMsgType.TEXT, (frame.type, frame.data, frame.extra)
        return self.parse(frame.data)

    def parse(self, text: str) -> Received:
        decoded = json.loads(text)
        if self.vsn == "2.0.0":
            assert isinstance(decoded, list) and len(decoded) == 5, decoded
            return Received(*decoded)
        assert isinstance(decoded, dict), decoded
        return Received(decoded.get("join_ref"), decoded["ref"], decoded["topic"], decoded["event"], decoded["payload"])

    async def nothing_else(self) -> None:
        """Nothing but what was already read came before a heartbeat's answer."""
        assert self._unread == [], self._unread
        ref = await self.send("phoenix", "heartbeat")
        message = await self.receive()
        assert (message.event, message.ref) == ("phx_reply", ref), message

    async def closed(self) -> aiohttp.WSMessage:
        """Read until the server closes; returns the close (or error) frame."""
        while True:
            frame = await self.ws.receive(timeout=RECEIVE_TIMEOUT)
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return frame
            self._unread.append(self.parse(frame.data))


def socket_url(client: TestClient, token: str | None, vsn: str | None = "2.0.0") -> str:
    params = {k: v for k, v in (("token", token), ("vsn", vsn)) if v is not None}
    return str(client.make_url(SOCKET_PATH).with_query(params))


def inference(experiment_id: str, name: tuple[str, ...] = ("crucible", "model", "inference"), **fields: Any) -> Any:
    metadata = {"experiment_id": experiment_id, "model": "gpt-test"}
    if name[:2] == ("crucible", "run"):  # reserved names need their run (and a log line its level and text)
        metadata |= {"run_id": "run_live", "level": "info", "message": "a line"}
    return {"event_name": list(name), "measurements": {"duration_ms": 12.5}, "metadata": metadata, **fields}


async def ingest(client: TestClient, *events: Any) -> None:
    answer = await client.post(EVENTS_URL, json={"events": list(events)})
    assert answer.status == 202, await answer.text()
    assert (await answer.json())["data"]["rejected"] == 0


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A metric of this (test) process, 0 before it was ever set."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0
