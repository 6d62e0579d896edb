"""GET /api/v1/telemetry/stream: live telemetry as Server-Sent Events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.keys_support import auth, create_key
from tests.live_support import EVENTS_URL, inference, ingest, sample
from tests.resource_helpers import call
from tests.support import eventually

STREAM_URL = "/api/v1/telemetry/stream"


@pytest.fixture
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


class EventStreamReader:
    """Reads SSE messages (event, data) and comment lines from a streaming answer."""

    def __init__(self, answer: aiohttp.ClientResponse) -> None:
        self.answer = answer
        self.comments: list[str] = []

    async def next(self) -> tuple[str, Any]:
        """The next message; comments met on the way are kept in `comments`."""
        fields: dict[str, str] = {}
        while True:
            line = (await self.answer.content.readline()).decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                return fields["event"], json.loads(fields["data"])


async def open_stream(session: aiohttp.ClientSession, client: TestClient, secret: str, **params: str) -> Any:
    answer = await session.get(client.make_url(STREAM_URL).with_query(params), headers=auth(secret))
    assert answer.status == 200, await answer.text()
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    reader = EventStreamReader(answer)
    assert (await answer.content.readline(), await answer.content.readline()) == (b": connected\n", b"\n")
    return reader


async def test_a_stream_sends_the_experiments_events_as_the_rest_api_returns_them(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    stream = await open_stream(anonymous, client, client.secret, **{"filter[experiment_id]": "exp_sse"})
    await ingest(client, inference("exp_other"), inference("exp_sse", data={"k": "v"}))
    event, pushed = await stream.next()
    assert event == "event" and pushed["metadata"]["experiment_id"] == "exp_sse"

    async def stored() -> bool:
        listed = await (await client.get(EVENTS_URL, params={"filter[experiment_id]": "exp_sse"})).json()
        return listed["data"] == [pushed]

    await eventually(stored)
    stream.answer.close()


async def test_a_stream_filters_event_names_and_defaults_to_every_experiment(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    stream = await open_stream(anonymous, client, client.secret, **{"filter[event_name]": "run.log, model.inference"})
    await ingest(
        client,
        inference("exp_a", ("crucible", "run", "progress")),
        inference("exp_b"),
        inference("exp_c", ("crucible", "run", "log")),
    )
    assert (await stream.next())[1]["metadata"]["experiment_id"] == "exp_b"
    assert (await stream.next())[1]["metadata"]["experiment_id"] == "exp_c"
    stream.answer.close()


async def test_an_idle_stream_sends_keep_alive_comments(app_client: Any, anonymous: aiohttp.ClientSession) -> None:
    client = await app_client(sse_heartbeat_seconds=0.05)
    stream = await open_stream(anonymous, client, client.secret)
    for _ in range(3):
        assert await stream.answer.content.readline() == b": keep-alive\n"
        assert await stream.answer.content.readline() == b"\n"
    stream.answer.close()


async def test_a_stream_needs_a_key_with_the_read_scope(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    async with anonymous.get(client.make_url(STREAM_URL)) as answer:
        assert answer.status == 401
    ingest_only = await create_key(client, "ingest")
    async with anonymous.get(client.make_url(STREAM_URL), headers=auth(ingest_only["secret"])) as answer:
        assert answer.status == 403
        assert (await answer.json())["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"filter[model]": "gpt-4"}, "filter[model]"),
        ({"since": "now"}, "since"),
        ({"filter[experiment_id]": " padded"}, "filter[experiment_id]"),
    ],
)
async def test_unknown_parameters_and_bad_filters_are_422(
    client: TestClient, params: dict[str, str], name: str
) -> None:
    answer = await client.get(STREAM_URL, params=params)
    assert answer.status == 422
    assert name in (await answer.json())["error"]["details"]


async def test_a_stream_of_a_revoked_key_ends_with_an_error_event(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    reader = await create_key(client, "read")
    stream = await open_stream(anonymous, client, reader["secret"])
    await call(client, "DELETE", f"/api/v1/api-keys/{reader['id']}", 204)
    assert await stream.next() == ("error", {"message": "the API key was revoked", "code": "unauthorized"})
    assert await stream.answer.content.read() == b""  # and the answer ends


async def test_a_stream_that_cannot_keep_up_is_disconnected_and_counted(
    app_client: Any, anonymous: aiohttp.ClientSession
) -> None:
    client = await app_client(live_send_queue_bytes=16 * 1024)
    stream = await open_stream(anonymous, client, client.secret)
    before = sample("crucible_live_slow_disconnects_total", {"transport": "sse"})
    batch = [inference("exp_slow", data={"padding": "x" * 4000}) for _ in range(500)]

    async def disconnected() -> bool:
        await ingest(client, *batch)  # the stream reads nothing meanwhile
        return sample("crucible_live_slow_disconnects_total", {"transport": "sse"}) > before

    await eventually(disconnected, timeout=120)
    while (message := await stream.next())[0] == "event":
        pass
    assert message == ("error", {"message": "too slow: the client did not read its events in time", "code": "too_slow"})
