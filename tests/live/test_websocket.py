"""GET /socket/websocket: the Phoenix Channels protocol, its channels, and its edges.

The official JavaScript client is checked end to end by tests/live/test_websocket_phoenix.py;
these tests drive the protocol frame by frame with aiohttp's WebSocket client.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestClient

from schemas.resources import SessionEnded
from service.http.appkeys import LOG, PROJECTOR
from service.http.auth import PRINCIPAL
from service.live.channels import ChannelRefusal, join
from service.resources.commands import submit
from service.resources.credentials import SESSION_COOKIE, Principal
from service.resources.keys import revoke_key
from tests.keys_support import create_key, session_cookie
from tests.live_support import (
    EVENTS_URL,
    PhoenixClient,
    Received,
    inference,
    ingest,
    sample,
    socket_url,
)
from tests.resource_helpers import act, call, create_experiment
from tests.support import eventually

Connect = Callable[..., Awaitable[PhoenixClient]]
SLOW_DISCONNECTS = "crucible_live_slow_disconnects_total"


@pytest.fixture
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session with no credentials of its own: each socket passes its token."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
async def connect(anonymous: aiohttp.ClientSession) -> AsyncIterator[Connect]:
    """`await connect(client, token=<default: the admin key>, vsn="2.0.0")`: an open socket."""
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def open_socket(client: TestClient, token: str | None = None, vsn: str = "2.0.0", **kwargs: Any) -> Any:
        ws = await anonymous.ws_connect(socket_url(client, token or client.secret, vsn), **kwargs)
        sockets.append(ws)
        return PhoenixClient(ws, vsn)

    yield open_socket
    for ws in sockets:
        await ws.close()


async def refused(anonymous: aiohttp.ClientSession, url: str, status: int, **kwargs: Any) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await anonymous.ws_connect(url, **kwargs)
    assert caught.value.status == status


def assert_ok(reply: Received, response: Any = None) -> None:
    assert reply.payload["status"] == "ok", reply
    if response is not None:
        assert reply.payload["response"] == response, reply


def assert_refused(reply: Received, code: str, reason: str | None = None) -> None:
    assert reply.event == "phx_reply" and reply.payload["status"] == "error", reply
    assert reply.payload["response"]["code"] == code, reply
    assert reply.payload["response"]["reason"], reply
    if reason is not None:
        assert reply.payload["response"]["reason"] == reason, reply


# -- the connection --------------------------------------------------------------------------


async def test_heartbeats_are_answered_without_a_join_ref(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    for _ in range(3):
        ref = await socket.send("phoenix", "heartbeat")
        assert await socket.receive() == Received(None, ref, "phoenix", "phx_reply", {"status": "ok", "response": {}})


async def test_a_missing_or_bad_token_is_refused_before_the_upgrade(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    url = client.make_url("/socket/websocket")
    await refused(anonymous, str(url.with_query(vsn="2.0.0")), 401)
    await refused(anonymous, str(url.with_query(vsn="2.0.0", token="crucible.key_0.nope")), 401)
    await refused(anonymous, str(url.with_query(vsn="2.0.0", token="not a token at all")), 401)
    async with anonymous.get(url.with_query(token="nope")) as answer:
        assert answer.status == 401
        assert (await answer.json())["error"]["code"] == "unauthorized"


async def test_a_key_without_the_read_scope_is_refused_with_403(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    ingest_only = await create_key(client, "ingest")
    await refused(anonymous, socket_url(client, ingest_only["secret"]), 403)


async def test_an_unknown_serializer_or_a_request_without_upgrade_is_refused(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    async with anonymous.get(socket_url(client, client.secret, vsn="3.0.0")) as answer:
        assert answer.status == 422
        assert "vsn" in (await answer.json())["error"]["details"]
    async with anonymous.get(socket_url(client, client.secret)) as answer:
        assert answer.status == 400
        assert (await answer.json())["error"]["code"] == "bad_request"


async def test_a_session_token_connects_and_the_cookie_only_from_this_server(
    client: TestClient, anonymous: aiohttp.ClientSession, connect: Connect
) -> None:
    login = await anonymous.post(client.make_url("/api/v1/sessions"), json={"api_key": client.secret})
    token = login.cookies[SESSION_COOKIE].value
    socket = await connect(client, token=token)
    await socket.nothing_else()
    cookie = {"Cookie": f"{SESSION_COOKIE}={token}"}
    url = socket_url(client, None)
    await refused(anonymous, url, 401, headers={**cookie, "Origin": "https://elsewhere.example"})
    own_page = {**cookie, "Origin": f"http://{client.make_url('/').host}:{client.port}"}
    ws = await anonymous.ws_connect(url, headers=own_page)
    await PhoenixClient(ws).nothing_else()
    await ws.close()


async def test_the_phoenix_auth_token_sub_protocol_connects(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    encoded = base64.b64encode(client.secret.encode()).decode().rstrip("=")
    ws = await anonymous.ws_connect(socket_url(client, None), protocols=("phoenix", f"base64url.bearer.phx.{encoded}"))
    assert ws.protocol == "phoenix"
    await PhoenixClient(ws).nothing_else()
    await ws.close()


async def test_a_frame_that_is_not_json_closes_the_socket_with_1007(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    await socket.ws.send_str("this is not JSON")
    assert (await socket.closed()).data == WSCloseCode.INVALID_TEXT


async def test_a_message_of_the_wrong_shape_closes_the_socket_with_1007(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    await socket.ws.send_str(json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "1"}))
    frame = await socket.closed()
    assert frame.data == WSCloseCode.INVALID_TEXT
    assert "join_ref, ref, topic, event, payload" in frame.extra


async def test_a_binary_frame_closes_the_socket_with_1003(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    await socket.ws.send_bytes(b"\x00\x01")
    assert (await socket.closed()).data == WSCloseCode.UNSUPPORTED_DATA


async def test_an_oversized_frame_closes_the_socket_with_1009(app_client: Any, connect: Connect) -> None:
    client = await app_client(ws_max_frame_bytes=1024)
    socket = await connect(client)
    await socket.request("phoenix", "heartbeat", {"padding": "x" * 500})  # under the limit: answered
    await socket.send("phoenix", "heartbeat", {"padding": "x" * 2000})
    assert (await socket.closed()).data == WSCloseCode.MESSAGE_TOO_BIG


async def test_a_silent_socket_is_closed_after_the_heartbeat_timeout(app_client: Any, connect: Connect) -> None:
    client = await app_client(ws_heartbeat_timeout_seconds=0.3)
    socket = await connect(client)
    frame = await socket.closed()
    assert (frame.data, frame.extra) == (WSCloseCode.OK, "heartbeat timeout")


async def test_a_revoked_key_loses_its_socket(client: TestClient, connect: Connect) -> None:
    reader = await create_key(client, "read")
    socket = await connect(client, token=reader["secret"])
    await socket.nothing_else()
    await call(client, "DELETE", f"/api/v1/api-keys/{reader['id']}", 204)
    frame = await socket.closed()
    assert frame.data == WSCloseCode.POLICY_VIOLATION


@pytest.mark.parametrize("by", ["token", "cookie"])
async def test_logging_out_closes_the_sessions_sockets_with_1008(
    client: TestClient, anonymous: aiohttp.ClientSession, connect: Connect, by: str
) -> None:
    key = await create_key(client, "read")
    login = await anonymous.post(client.make_url("/api/v1/sessions"), json={"api_key": key["secret"]})
    token = login.cookies[SESSION_COOKIE].value
    if by == "token":
        ws = await anonymous.ws_connect(socket_url(client, token))
    else:
        ws = await anonymous.ws_connect(socket_url(client, None), headers=session_cookie(token, client))
    socket = PhoenixClient(ws)
    await socket.join("telemetry:all")
    other = await connect(client, token=key["secret"])  # the key's own socket is not the session's
    logout = await anonymous.delete(client.make_url("/api/v1/sessions"), headers=session_cookie(token, client))
    assert logout.status == 204, await logout.text()
    frame = await socket.closed()
    assert (frame.data, frame.extra) == (WSCloseCode.POLICY_VIOLATION, "the session ended")
    await other.nothing_else()
    await ws.close()


async def test_a_sessions_socket_closes_with_1008_when_the_session_expires(
    app_client: Any, anonymous: aiohttp.ClientSession
) -> None:
    client = await app_client(session_ttl_seconds=2)
    login = await anonymous.post(client.make_url("/api/v1/sessions"), json={"api_key": client.secret})
    token = login.cookies[SESSION_COOKIE].value
    session = PhoenixClient(await anonymous.ws_connect(socket_url(client, token)))
    keyed = PhoenixClient(await anonymous.ws_connect(socket_url(client, client.secret)))
    frame = await session.closed()
    assert (frame.data, frame.extra) == (WSCloseCode.POLICY_VIOLATION, "the session expired")
    await keyed.nothing_else()  # a key's socket has no expiry
    await keyed.ws.close()


@pytest.mark.parametrize("ending", ["session", "key"])
async def test_credentials_lost_during_the_upgrade_close_the_socket_with_1008(
    client: TestClient, anonymous: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """The session ends (or the key is revoked) after the handshake's check but before the
    socket is among the hub's connections, which that event's fan-out then missed."""
    key = await create_key(client, "read")
    login = await anonymous.post(client.make_url("/api/v1/sessions"), json={"api_key": key["secret"]})
    token = login.cookies[SESSION_COOKIE].value
    prepare = web.WebSocketResponse.prepare

    async def lose_credentials_first(self: web.WebSocketResponse, request: web.Request) -> Any:
        principal = request[PRINCIPAL]
        app = request.app
        if ending == "key":
            await revoke_key(app[LOG], app[PROJECTOR], principal.key.id, "test")
        else:
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
            session_id = principal.session_id or ""
            await submit(
                app[LOG],
                app[PROJECTOR],
                lambda env: SessionEnded(**env.fields(), session_id=session_id, expires_at=expires),
                "test",
            )
        return await prepare(self, request)

    monkeypatch.setattr(web.WebSocketResponse, "prepare", lose_credentials_first)
    ws = await anonymous.ws_connect(socket_url(client, token))
    frame = await asyncio.wait_for(ws.receive(), 10)
    assert frame.type == WSMsgType.CLOSE, frame
    assert frame.data == WSCloseCode.POLICY_VIOLATION
    assert frame.extra == ("the API key was revoked" if ending == "key" else "the session ended")


async def test_stopping_the_server_closes_its_sockets_with_1001(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    await socket.join("telemetry:all")
    closing = asyncio.create_task(socket.closed())
    await client.close()  # would wait for every handler, and sockets never end by themselves
    frame = await closing
    assert (frame.data, frame.extra) == (WSCloseCode.GOING_AWAY, "the server is stopping")


# -- joining ---------------------------------------------------------------------------------


async def test_a_message_before_joining_is_answered_unmatched_topic(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    ref = await socket.send("telemetry:all", "subscribe", {"event_types": ["x"]}, join_ref="7")
    reply = await socket.reply(ref)
    assert reply.join_ref is None and reply.topic == "telemetry:all"
    assert_refused(reply, "unmatched_topic", "unmatched topic")
    reply = await socket.request("experiment:exp_nope", "phx_leave")
    assert_refused(reply, "unmatched_topic", "unmatched topic")
    await socket.nothing_else()  # the socket goes on


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        ("chat:lobby", "unmatched_topic"),
        ("telemetry", "unmatched_topic"),
        ("experiment:", "invalid_topic"),
        ("dashboard: padded ", "invalid_topic"),
        ("telemetry:" + "x" * 300, "invalid_topic"),
        ("experiment:exp_missing", "not_found"),
    ],
)
async def test_a_join_of_a_malformed_unknown_or_missing_topic_is_an_error_reply(
    client: TestClient, connect: Connect, topic: str, code: str
) -> None:
    socket = await connect(client)
    ref, reply = await socket.join(topic)
    assert (reply.join_ref, reply.ref, reply.topic) == (ref, ref, topic)
    assert_refused(reply, code)
    await socket.nothing_else()


async def test_a_join_with_a_bad_filter_is_an_error_reply(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    _, reply = await socket.join("telemetry:all", {"event_types": "model.inference"})
    assert_refused(reply, "validation_error")
    _, reply = await socket.join("telemetry:all", {"event_types": [""]})
    assert_refused(reply, "validation_error")


async def test_joining_twice_keeps_only_the_second_join(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    first, reply = await socket.join("telemetry:exp_twice")
    assert_ok(reply, {"event_types": None})
    second, reply = await socket.join("telemetry:exp_twice")
    assert_ok(reply)
    assert first != second
    await ingest(client, inference("exp_twice"))
    await socket.push("telemetry:exp_twice", "event")
    await socket.nothing_else()  # one push, not one per join


async def test_leaving_answers_ok_then_closes_the_channel(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    join_ref, _ = await socket.join("telemetry:exp_leave")
    reply = await socket.request("telemetry:exp_leave", "phx_leave", join_ref=join_ref)
    assert (reply.join_ref, reply.event) == (join_ref, "phx_reply")
    assert_ok(reply, {})
    assert await socket.receive() == Received(join_ref, join_ref, "telemetry:exp_leave", "phx_close", {})
    await ingest(client, inference("exp_leave"))
    reply = await socket.request("telemetry:exp_leave", "subscribe", {"event_types": ["x"]}, join_ref=join_ref)
    assert_refused(reply, "unmatched_topic")


async def test_a_message_for_an_earlier_join_is_dropped(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    earlier, _ = await socket.join("telemetry:exp_rejoin")
    await socket.join("telemetry:exp_rejoin")
    await socket.send("telemetry:exp_rejoin", "subscribe", {"event_types": ["x"]}, join_ref=earlier)
    await socket.nothing_else()


async def test_an_unknown_event_on_a_joined_channel_is_an_error_reply(client: TestClient, connect: Connect) -> None:
    experiment = await create_experiment(client)
    socket = await connect(client)
    join_ref, _ = await socket.join(f"experiment:{experiment['id']}")
    reply = await socket.request(f"experiment:{experiment['id']}", "subscribe", {}, join_ref=join_ref)
    assert_refused(reply, "unknown_event")
    join_ref, _ = await socket.join("telemetry:all")
    assert_refused(await socket.request("telemetry:all", "shout", {}, join_ref=join_ref), "unknown_event")
    await socket.nothing_else()


async def test_joining_needs_the_read_scope(client: TestClient) -> None:
    state = client.app[PROJECTOR].state
    writer = dataclasses.replace(next(iter(state.api_keys.values())), scopes=frozenset({"write"}))
    with pytest.raises(ChannelRefusal) as caught:  # connecting needs it already: this is the second check
        join("telemetry:all", {}, Principal(writer), state)
    assert caught.value.code == "forbidden"


# -- experiment channels ---------------------------------------------------------------------


async def test_an_experiment_channel_pushes_status_changes(client: TestClient, connect: Connect) -> None:
    experiment = await create_experiment(client)
    topic = f"experiment:{experiment['id']}"
    socket = await connect(client)
    _, reply = await socket.join(topic)
    assert_ok(reply, {"status": "pending"})
    started = (await act(client, experiment["id"], "start"))["data"]
    assert (await socket.push(topic, "status_changed")).payload == {
        "status": "running",
        "started_at": started["started_at"],
    }
    await act(client, experiment["id"], "pause")
    assert (await socket.push(topic, "status_changed")).payload["status"] == "paused"
    await act(client, experiment["id"], "resume")
    assert (await socket.push(topic, "status_changed")).payload["status"] == "running"
    cancelled = (await act(client, experiment["id"], "cancel"))["data"]
    pushed = (await socket.push(topic, "status_changed")).payload
    assert pushed == {
        "status": "cancelled",
        "started_at": started["started_at"],
        "completed_at": cancelled["completed_at"],
    }
    await socket.nothing_else()


async def test_an_experiment_channel_is_told_of_its_deletion(client: TestClient, connect: Connect) -> None:
    experiment = await create_experiment(client)
    other = await create_experiment(client, "other")
    topic = f"experiment:{experiment['id']}"
    socket = await connect(client)
    await socket.join(topic)
    await act(client, other["id"], "start")  # another experiment: nothing here
    await call(client, "DELETE", f"/api/v1/experiments/{experiment['id']}", 204)
    pushed = await socket.push(topic, "error")
    assert pushed.payload["code"] == "experiment_deleted" and experiment["id"] in pushed.payload["message"]
    await socket.nothing_else()


async def test_progress_updates_carry_an_eta_from_the_observed_rate(client: TestClient, connect: Connect) -> None:
    experiment = await create_experiment(client)
    # Started first: a run's first event would start a pending experiment (a status_changed push).
    assert (await client.post(f"/api/v1/experiments/{experiment['id']}/start")).status == 200
    topic = f"experiment:{experiment['id']}"
    socket = await connect(client)
    await socket.join(topic)
    start = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.UTC)

    def progress(run_id: str, value: float, seconds: int) -> dict[str, Any]:
        return {
            "event_name": ["crucible", "run", "progress"],
            "measurements": {"progress": value, "loss": 0.3},
            "metadata": {"experiment_id": experiment["id"], "run_id": run_id},
            "timestamp": (start + dt.timedelta(seconds=seconds)).isoformat(),
        }

    await ingest(client, progress("run_a", 0.25, 0), inference(experiment["id"]))
    assert (await socket.push(topic, "progress_updated")).payload == {
        "progress": 0.25,
        "eta_seconds": None,
        "run_id": "run_a",
    }
    await ingest(client, progress("run_a", 0.5, 10))  # 0.25 in 10 s: 20 s to go
    assert (await socket.push(topic, "progress_updated")).payload == {
        "progress": 0.5,
        "eta_seconds": 20,
        "run_id": "run_a",
    }
    await ingest(client, progress("run_b", 0.1, 10))  # a second run, rate unknown yet
    assert (await socket.push(topic, "progress_updated")).payload == {
        "progress": 0.3,
        "eta_seconds": None,
        "run_id": "run_b",
    }
    await ingest(client, progress("run_b", 0.2, 20))  # 0.8 left at 0.01/s: the slower run sets the ETA
    assert (await socket.push(topic, "progress_updated")).payload["eta_seconds"] == 80
    for run_id in ("run_a", "run_b"):  # each run's first event made it: a new run, running
        pushed = await socket.push(topic, "run_status_changed")
        assert pushed.payload == {"run_id": run_id, "status": "running", "error": None, "completed_at": None}
    await socket.nothing_else()


# -- telemetry channels ----------------------------------------------------------------------


async def test_telemetry_channels_push_events_as_the_rest_api_returns_them(
    client: TestClient, connect: Connect
) -> None:
    socket = await connect(client)
    assert_ok((await socket.join("telemetry:exp_shape"))[1], {"event_types": None})
    assert_ok((await socket.join("telemetry:all"))[1])
    sent = [
        inference("exp_shape", timestamp="2024-01-15T12:35:00.123456+02:00", data={"prompt": "hi", "n": [1, 2]}),
        inference("exp_shape", ("crucible", "run", "log"), id="client-id-1", measurements={}),
        inference("exp_other"),
    ]
    await ingest(client, *sent)
    pushed = [(await socket.push("telemetry:exp_shape", "event")).payload for _ in range(2)]
    everything = [(await socket.push("telemetry:all", "event")).payload for _ in range(3)]
    assert everything[:2] == pushed
    assert everything[2]["metadata"]["experiment_id"] == "exp_other"
    assert pushed[0]["timestamp"] == "2024-01-15T10:35:00.123456Z"
    assert pushed[1]["id"] == "client-id-1" and pushed[1]["measurements"] == {}

    async def stored() -> bool:
        listed = await (await client.get(EVENTS_URL, params={"filter[experiment_id]": "exp_shape"})).json()
        return len(listed["data"]) == 2

    await eventually(stored)
    listed = await (await client.get(EVENTS_URL, params={"filter[experiment_id]": "exp_shape"})).json()
    assert sorted(listed["data"], key=lambda e: e["id"]) == sorted(pushed, key=lambda e: e["id"])
    await socket.nothing_else()


async def test_subscribe_and_unsubscribe_filter_event_types(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    topic = "telemetry:exp_filter"
    join_ref, _ = await socket.join(topic)
    reply = await socket.request(topic, "subscribe", {"event_types": ["model.inference"]}, join_ref=join_ref)
    assert_ok(reply, {"event_types": ["model.inference"]})
    other = inference("exp_filter", ("crucible", "run", "log"))
    matching = inference("exp_filter")
    await ingest(client, other, matching, inference("exp_filter", ("crucible", "xmodel", "inference")))
    assert (await socket.push(topic, "event")).payload["event_name"] == ["crucible", "model", "inference"]
    await socket.nothing_else()
    reply = await socket.request(topic, "subscribe", {"event_types": ["crucible.run.log"]}, join_ref=join_ref)
    assert_ok(reply, {"event_types": ["crucible.run.log", "model.inference"]})
    reply = await socket.request(topic, "unsubscribe", {"event_types": ["model.inference"]}, join_ref=join_ref)
    assert_ok(reply, {"event_types": ["crucible.run.log"]})
    await ingest(client, matching, other)
    assert (await socket.push(topic, "event")).payload["event_name"] == ["crucible", "run", "log"]
    await socket.nothing_else()
    reply = await socket.request(topic, "unsubscribe", {"event_types": ["crucible.run.log"]}, join_ref=join_ref)
    assert_ok(reply, {"event_types": None})  # no subscription left: every event again
    await ingest(client, matching, other)
    await socket.push(topic, "event")
    await socket.push(topic, "event")
    reply = await socket.request(topic, "subscribe", {"event_types": [3]}, join_ref=join_ref)
    assert_refused(reply, "validation_error")


async def test_a_join_can_start_with_a_filter(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    _, reply = await socket.join("telemetry:all", {"event_types": ["run.log"]})
    assert_ok(reply, {"event_types": ["run.log"]})
    await ingest(client, inference("exp_x"), inference("exp_x", ("crucible", "run", "log")))
    assert (await socket.push("telemetry:all", "event")).payload["event_name"][-1] == "log"
    await socket.nothing_else()


async def test_records_no_socket_wants_are_not_decoded(client: TestClient, connect: Connect) -> None:
    socket = await connect(client)
    await socket.join("telemetry:exp_wanted")
    decoded = sample("crucible_live_telemetry_records_total", {"outcome": "decoded"})
    skipped = sample("crucible_live_telemetry_records_total", {"outcome": "skipped"})
    await ingest(client, inference("exp_unwanted"))
    await ingest(client, inference("exp_wanted"))
    await socket.push("telemetry:exp_wanted", "event")  # records are read in order: both were seen
    assert sample("crucible_live_telemetry_records_total", {"outcome": "decoded"}) == decoded + 1
    assert sample("crucible_live_telemetry_records_total", {"outcome": "skipped"}) == skipped + 1


async def test_a_client_that_cannot_keep_up_is_disconnected_and_counted(
    app_client: Any, anonymous: aiohttp.ClientSession, connect: Connect
) -> None:
    client = await app_client(live_send_queue_bytes=16 * 1024)
    socket = await connect(client, max_msg_size=0)
    join_ref, _ = await socket.join("telemetry:all")
    before = sample(SLOW_DISCONNECTS, {"transport": "websocket"})
    batch = [inference("exp_slow", data={"padding": "x" * 4000}) for _ in range(500)]

    async def disconnected() -> bool:
        # The socket reads nothing meanwhile: its client stops reading the connection once its
        # own buffer is full, then the kernel's buffers fill, then the server's queue.
        await ingest(client, *batch)
        return sample(SLOW_DISCONNECTS, {"transport": "websocket"}) > before

    await eventually(disconnected, timeout=120)
    seen = []
    while True:
        frame = await socket.ws.receive(timeout=30)
        if frame.type != WSMsgType.TEXT:
            break
        seen.append(socket.parse(frame.data))
    assert frame.type == WSMsgType.CLOSE and frame.data == WSCloseCode.TRY_AGAIN_LATER, frame
    assert seen[-1] == Received(join_ref, join_ref, "telemetry:all", "phx_error", {})
    assert sample(SLOW_DISCONNECTS, {"transport": "websocket"}) == before + 1
    metrics_text = await (await client.get("/metrics")).text()
    assert 'crucible_live_slow_disconnects_total{transport="websocket"}' in metrics_text

    async def no_sockets() -> bool:
        return sample("crucible_live_connections", {"transport": "websocket"}) == 0

    await eventually(no_sockets)


# -- dashboard channels ----------------------------------------------------------------------


async def test_a_dashboard_gets_system_stats_and_the_experiment_summary(client: TestClient, connect: Connect) -> None:
    reader = await create_key(client, "read")
    socket = await connect(client, token=reader["secret"])
    topic = f"dashboard:{reader['id']}"
    assert_ok((await socket.join(topic))[1], {})
    stats = (await socket.push(topic, "system_stats")).payload
    assert set(stats) == {"cpu", "memory", "gpu", "process"}
    assert 0 <= stats["cpu"] <= 100 and 0 < stats["memory"] <= 100 and stats["gpu"] is None
    assert stats["process"]["rss_bytes"] > 0
    assert (await socket.push(topic, "experiment_summary")).payload == {"active": 0, "completed_today": 0}
    experiment = await create_experiment(client)
    await act(client, experiment["id"], "start")
    assert (await socket.push(topic, "experiment_summary")).payload == {"active": 1, "completed_today": 0}
    await act(client, experiment["id"], "cancel")
    assert (await socket.push(topic, "experiment_summary")).payload == {"active": 0, "completed_today": 0}


async def test_dashboards_are_pushed_again_every_interval(app_client: Any, connect: Connect) -> None:
    client = await app_client(live_stats_seconds=0.1)
    socket = await connect(client)
    topic = "dashboard:anyone"  # an admin key may watch any dashboard
    await socket.join(topic)
    for _ in range(3):
        await socket.push(topic, "system_stats")
        await socket.push(topic, "experiment_summary")


async def test_a_key_may_join_only_its_own_dashboard(client: TestClient, connect: Connect) -> None:
    reader = await create_key(client, "read")
    other = await create_key(client, "read")
    socket = await connect(client, token=reader["secret"])
    _, reply = await socket.join(f"dashboard:{other['id']}")
    assert_refused(reply, "forbidden")
    assert reader["id"] in reply.payload["response"]["reason"]
    admin = await connect(client)
    assert_ok((await admin.join(f"dashboard:{other['id']}"))[1])


# -- serializer 1.0.0 ------------------------------------------------------------------------


async def test_serializer_v1_speaks_json_objects(client: TestClient, connect: Connect) -> None:
    socket = await connect(client, vsn="1.0.0")
    ref = await socket.send("phoenix", "heartbeat")
    raw = json.loads((await socket.ws.receive(timeout=30)).data)
    assert raw == {
        "topic": "phoenix",
        "event": "phx_reply",
        "payload": {"status": "ok", "response": {}},
        "ref": ref,
        "join_ref": None,
    }
    ref = await socket.send("telemetry:exp_v1", "phx_join")
    assert_ok(await socket.reply(ref), {"event_types": None})
    await ingest(client, inference("exp_v1"))
    pushed = await socket.push("telemetry:exp_v1", "event")
    assert pushed.ref is None and pushed.payload["metadata"]["experiment_id"] == "exp_v1"
    v2 = await connect(client, vsn="2.0.0")  # both serializers side by side, on one topic
    await v2.join("telemetry:exp_v1")
    await ingest(client, inference("exp_v1"))
    assert (await socket.push("telemetry:exp_v1", "event")).payload == (
        await v2.push("telemetry:exp_v1", "event")
    ).payload


@pytest.mark.kafka
async def test_telemetry_of_every_partition_reaches_the_channels_on_kafka(
    app_client: Any, kafka_bootstrap: str, connect: Connect, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()  # the warehouse's; the log is the broker
    client = await app_client(kafka=kafka_bootstrap, kafka_idempotence=False, kafka_partitions=3)
    socket = await connect(client)
    await socket.join("telemetry:all")
    experiments = [f"exp_kafka_{n}" for n in range(12)]  # keys spread over the partitions
    await ingest(client, *(inference(e) for e in experiments))
    seen: set[str] = set()
    while seen != set(experiments):  # (tansu may also replay a few older records of other tests)
        pushed = await socket.push("telemetry:all", "event")
        if pushed.payload["metadata"]["experiment_id"] in experiments:
            seen.add(pushed.payload["metadata"]["experiment_id"])


async def test_a_telemetry_record_the_tail_cannot_read_does_not_silence_the_channels(
    client: TestClient, connect: Connect
) -> None:
    """A stored value nested past what the API's stack can decode (as an ingest worker,
    decoding with an almost empty stack, once let through) is skipped: later events still reach
    the channels, and a tail that stops for any reason is started again by the next join."""
    from service.ingest.ingestor import telemetry_record

    socket = await connect(client)
    await socket.join("telemetry:exp_tail")
    depth = 2_000
    value = (
        b'{"received_at":"2024-01-15T10:35:00Z","batch_id":"b","events":[{"id":"evt_deep",'
        b'"event_name":["crucible","model","inference"],"measurements":{},'
        b'"metadata":{"experiment_id":"exp_tail"},"timestamp":"2024-01-15T10:35:00Z","data":'
        + b'{"a":' * depth
        + b"1"
        + b"}" * depth
        + b"}]}"
    )
    await client.app[LOG].append([telemetry_record("exp_tail", value, 1)])
    await ingest(client, inference("exp_tail"))
    pushed = await socket.push("telemetry:exp_tail", "event")
    assert pushed.payload["metadata"]["experiment_id"] == "exp_tail"
