"""Hostile requests: each is a 4xx in API.md's error shape, and the server keeps serving.

Deep JSON nesting, compression bombs, malformed HTTP (raw sockets, since aiohttp's client
will not send it), clients that vanish mid-body, and WebSocket abuse (unmasked frames,
deeply nested frames, too many channels or sockets).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode
from aiohttp.test_utils import TestClient

from service.ingest.workers import IngestWorkers
from tests.keys_support import create_key
from tests.live_support import PhoenixClient, inference, socket_url
from tests.resource_helpers import assert_error
from tests.support import eventually

DEEP = 5_000  # beyond the decoder's recursion limit however little of the stack is in use
EVENTS = "/api/v1/telemetry/events"
JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


async def assert_serving(client: TestClient) -> None:
    answer = await client.get("/healthz")
    assert answer.status == 200, await answer.text()


# -- deep nesting ----------------------------------------------------------------------------


def deep_bodies() -> dict[str, bytes]:
    """A body per JSON route, nested too deeply where its decoder would recurse."""
    event = b'{"event_name":["a"],"measurements":{},"metadata":{},"data":' + deep_object(DEEP) + b"}"
    return {
        EVENTS: b'{"events":[' + event + b"]}",
        "/api/v1/experiments": b'{"experiment":{"name":"x","config":' + nested(DEEP) + b"}}",
        "/api/v1/models": b'{"model":' + deep_object(DEEP) + b"}",
        "/api/v1/statistical-results": b'{"test":' + nested(DEEP) + b"}",
        "/api/v1/export/comparison": nested(DEEP),
        "/api/v1/telemetry/export": deep_object(DEEP),
        "/api/v1/api-keys": b'{"api_key":' + nested(DEEP) + b"}",
        "/api/v1/sessions": deep_object(DEEP),
    }


@pytest.mark.parametrize("path", list(deep_bodies()))
async def test_deeply_nested_json_is_400_on_every_json_route(client: TestClient, path: str) -> None:
    answer = await client.post(path, data=deep_bodies()[path], headers={"Content-Type": "application/json"})
    error = await assert_error(answer, 400, "bad_request")
    assert "nested too deeply" in error["message"]
    await assert_serving(client)


async def test_deep_arrays_where_a_batch_is_expected_are_refused(client: TestClient) -> None:
    """Where the schema expects an object, msgspec stops at the first array (422) without recursing."""
    for body in (nested(DEEP), b'{"events":' + nested(DEEP) + b"}", b'{"events":[' + nested(DEEP) + b"]}"):
        answer = await client.post(EVENTS, data=body, headers=JSON)
        assert answer.status in (400, 422)
        await assert_error(answer, answer.status)
    await assert_serving(client)


async def test_nesting_the_decoder_takes_is_accepted(client: TestClient) -> None:
    """Nesting within the documented bound (64 levels for what is stored) is data like any other."""
    from service.core.input_bounds import MAX_STORED_DEPTH

    event = inference("exp_deep", data={"a": __import__("json").loads(deep_object(MAX_STORED_DEPTH - 1))})
    answer = await client.post(EVENTS, json={"events": [event]})
    assert answer.status == 202, await answer.text()
    assert (await answer.json())["data"]["accepted"] == 1


async def test_deep_nesting_in_a_worker_process_is_400_and_the_worker_lives(tmp_path: Path) -> None:
    """A body of 64 KiB or more is decoded by a worker process; nesting must not kill it."""
    workers = IngestWorkers(1, inline_below_bytes=1)
    await workers.start()
    try:
        (pid,) = workers.pids()
        body = b'{"events":[{"event_name":["a"],"data":' + deep_object(DEEP) + b"}]}" + b" " * 70_000
        import datetime as dt

        from service.ingest.batch import BatchRefused

        with pytest.raises(BatchRefused) as refused:
            await workers.prepare(body, 10, "b1", dt.datetime.now(dt.UTC))
        assert refused.value.status == 400
        assert workers.pids() == {pid}  # the same process answered, and lives
    finally:
        await workers.stop()


async def test_a_deeply_nested_cursor_is_422(client: TestClient) -> None:
    """Cursors are JSON the client hands back, in the query string."""
    deep = b'["a","b","c","d",' + nested(1_500) + b"]"
    cursor = base64.urlsafe_b64encode(deep).decode().rstrip("=")
    for path in (EVENTS, "/api/v1/experiments"):
        answer = await client.get(path, params={"cursor": cursor})
        await assert_error(answer, 422, "validation_error")
    await assert_serving(client)


# -- compressed bodies -----------------------------------------------------------------------


def gzip_bomb(inflated: int) -> bytes:
    return gzip.compress(b"\0" * inflated, compresslevel=1)


async def test_a_compression_bomb_is_413_and_inflated_no_further_than_the_limit(app_client: Any) -> None:
    client = await app_client(max_body_bytes=1024 * 1024)
    bomb = gzip_bomb(256 * 1024 * 1024)
    answer = await client.post(EVENTS, data=bomb, headers={**JSON, "Content-Encoding": "gzip"})
    error = await assert_error(answer, 413, "payload_too_large")
    assert str(1024 * 1024) in error["message"]
    answer = await client.post("/api/v1/experiments", data=bomb, headers={**JSON, "Content-Encoding": "gzip"})
    await assert_error(answer, 413, "payload_too_large")
    await assert_serving(client)


async def test_bombs_sent_together_queue_no_further_than_the_bound(app_client: Any) -> None:
    """Past MAX_INFLATING compressed bodies waiting for the inflating thread, another is a 503
    to retry, not one more in a queue every compressed request waits behind."""
    from service.http import bodies

    client = await app_client(max_body_bytes=16 * 1024 * 1024)
    bomb = gzip_bomb(64 * 1024 * 1024)
    sends = [
        client.post(EVENTS, data=bomb, headers={**JSON, "Content-Encoding": "gzip"})
        for _ in range(bodies.MAX_INFLATING * 4)
    ]
    answers = await asyncio.gather(*sends)
    statuses = {answer.status for answer in answers}
    assert statuses == {413, 503}, statuses
    for answer in answers:
        if answer.status == 503:
            await assert_error(answer, 503, "unavailable")
            assert answer.headers["Retry-After"] == "1"
    assert bodies._inflating == 0
    await assert_serving(client)


def test_inflation_stops_at_the_limit_in_small_steps() -> None:
    """The bound: no more than the limit (and one step) is ever inflated."""
    from service.core.input_bounds import INFLATE_STEP_BYTES, inflate_steps
    from service.core.problem import Problem

    seen = 0
    with pytest.raises(Problem) as refused:
        for piece in inflate_steps(gzip_bomb(64 * 1024 * 1024), "gzip", 1024 * 1024):
            assert len(piece) <= INFLATE_STEP_BYTES
            seen += len(piece)
    assert refused.value.status == 413
    assert seen <= 1024 * 1024


async def test_gzip_and_deflate_bodies_are_taken(client: TestClient) -> None:
    import json

    body = json.dumps({"events": [inference("exp_gz")]}).encode()
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)  # what some clients send for "deflate"
    for encoding, data in (
        ("gzip", gzip.compress(body)),
        ("gzip", gzip.compress(body[:10]) + gzip.compress(body[10:])),  # two members, one body
        ("deflate", zlib.compress(body)),
        ("deflate", raw_deflate.compress(body) + raw_deflate.flush()),
    ):
        answer = await client.post(EVENTS, data=data, headers={**JSON, "Content-Encoding": encoding})
        assert answer.status == 202, await answer.text()
    experiment = gzip.compress(json.dumps({"experiment": {"name": "gzipped"}}).encode())
    answer = await client.post("/api/v1/experiments", data=experiment, headers={**JSON, "Content-Encoding": "gzip"})
    assert answer.status == 201, await answer.text()


async def test_unknown_or_broken_encodings_are_refused(client: TestClient) -> None:
    body = b'{"events":[]}'
    await assert_error(await client.post(EVENTS, data=body, headers={**JSON, "Content-Encoding": "br"}), 415)
    await assert_error(await client.post(EVENTS, data=body, headers={**JSON, "Content-Encoding": "gzip, gzip"}), 415)
    await assert_error(
        await client.post(EVENTS, data=body, headers={**JSON, "Content-Encoding": "gzip"}), 400, "bad_request"
    )
    truncated = gzip.compress(body * 100)[:-20]
    answer = await client.post(EVENTS, data=truncated, headers={**JSON, "Content-Encoding": "gzip"})
    await assert_error(answer, 400, "bad_request")
    deep = gzip.compress(b'{"experiment":{"name":"x","config":' + nested(DEEP) + b"}}")
    answer = await client.post("/api/v1/experiments", data=deep, headers={**JSON, "Content-Encoding": "gzip"})
    await assert_error(answer, 400, "bad_request")
    await assert_serving(client)


async def test_a_checkpoint_is_stored_as_the_bytes_sent_whatever_its_content_encoding(client: TestClient) -> None:
    from tests.api.test_checkpoints import download, put, start_run

    run_id = "run_gzipped"
    await start_run(client, run_id)
    sent = gzip_bomb(8 * 1024 * 1024)  # a gzip file, not a body to inflate
    await put(client, run_id, "ckpt_gz", sent, 201, headers={**JSON, "Content-Encoding": "gzip"})
    _, stored = await download(client, run_id, "ckpt_gz")
    assert stored == sent


# -- malformed HTTP and vanishing clients ----------------------------------------------------


async def raw_exchange(client: TestClient, request: bytes) -> tuple[int, bytes, bytes]:
    """Send `request` bytes on a fresh connection; (status, headers, body) of the answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]
    assert noisy == [], [(r.name, r.getMessage()) for r in noisy]


def assert_raw_error(status: int, head: bytes, body: bytes, expected: int) -> dict[str, Any]:
    import json

    assert status == expected, (head, body)
    assert b"application/json" in head.lower(), head
    error = json.loads(body)["error"]
    assert set(error) >= {"code", "message", "details"}, error
    return dict(error)


async def test_a_url_over_8_kb_is_a_json_400_logged_in_one_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = b"GET /api/v1/experiments?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    error = assert_raw_error(*await raw_exchange(client, request), 400)
    assert error["code"] == "bad_request"
    no_tracebacks(caplog)
    await assert_serving(client)


async def test_a_control_byte_in_a_header_is_a_json_400_logged_in_one_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = (
        b"POST /api/v1/experiments HTTP/1.1\r\nHost: x\r\nContent-Type: application/\x7fjson\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    assert_raw_error(*await raw_exchange(client, request), 400)
    no_tracebacks(caplog)
    await assert_serving(client)


def test_clients_gone_mid_body_and_malformed_requests_log_one_line_in_crucible_serve(tmp_path: Path) -> None:
    """The real server (uvloop, web.run_app): what a vanished client leaves in its log."""
    import json
    import socket
    import time
    import urllib.request

    from tests.support import create_admin_key, free_port, serve_processes

    with serve_processes(tmp_path) as make:
        secret = create_admin_key(["--data-dir", str(tmp_path / "data")])
        server = make(free_port()).start(timeout=120)
        for path in (EVENTS, "/api/v1/experiments"):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
                )
                sock.sendall(head.encode() + b'{"events": [' + b" " * 1000)
                time.sleep(0.5)  # the handler is waiting for the rest of the body
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /api/v1/experiments?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.makefile("rb").read()
        status_line, _, body = answer.partition(b"\r\n\r\n")
        assert status_line.split(b" ")[1] == b"400", status_line
        assert set(json.loads(body)["error"]) >= {"code", "message", "details"}
        with urllib.request.urlopen(server.url + "/healthz", timeout=10) as health:
            assert health.status == 200
        server.stop()
        log = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        assert "unexpected error" not in log, log[-3000:]
        assert log.count("client went away") == 2, log[-3000:]


# -- WebSockets ------------------------------------------------------------------------------


async def open_socket(session: aiohttp.ClientSession, client: TestClient, token: str | None = None) -> PhoenixClient:
    return PhoenixClient(await session.ws_connect(socket_url(client, token or client.secret)))


async def test_a_deeply_nested_frame_closes_the_socket_with_1007(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    socket = await open_socket(anonymous, client)
    await socket.ws.send_str('[null,"1","phoenix","heartbeat",' + nested(DEEP).decode() + "]")
    closed = await socket.closed()
    assert closed.type == aiohttp.WSMsgType.CLOSE, closed
    assert closed.data == WSCloseCode.INVALID_TEXT, closed
    assert "nested too deeply" in closed.extra
    await assert_serving(client)


def ws_handshake(client: TestClient) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /socket/websocket?token={client.secret}&vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def client_frame(payload: bytes, masked: bool = True, opcode: int = 0x1) -> bytes:
    """A final frame as a client sends it (RFC 6455 section 5.2), masked unless told not to."""
    head = bytes([0x80 | opcode])
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_server_frames(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each server frame until the server closes the connection."""
    frames = []
    data = await asyncio.wait_for(reader.read(), 30)
    while data:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if size == 126:
            size, start = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, start = struct.unpack("!Q", data[2:10])[0], 10
        frames.append((opcode, data[start : start + size]))
        data = data[start + size :]
    return frames


@pytest.mark.parametrize("size", [5, 300, 70_000])
async def test_an_unmasked_client_frame_closes_the_socket_with_1002(client: TestClient, size: int) -> None:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(ws_handshake(client))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        heartbeat = b'[null,"1","phoenix","heartbeat",{}]'
        writer.write(client_frame(heartbeat))  # masked: answered
        writer.write(client_frame(b" " * size + heartbeat, masked=False))
        await writer.drain()
        frames = await read_server_frames(reader)
    finally:
        writer.close()
    assert frames[0][0] == 0x1 and b"phx_reply" in frames[0][1], frames
    opcode, payload = frames[-1]
    assert opcode == 0x8, frames  # close
    assert struct.unpack("!H", payload[:2])[0] == WSCloseCode.PROTOCOL_ERROR, payload
    assert len(frames) == 2, frames  # the unmasked heartbeat was not answered
    await assert_serving(client)


async def test_a_socket_joins_at_most_ws_max_channels(app_client: Any, anonymous: aiohttp.ClientSession) -> None:
    client = await app_client(ws_max_channels=3)
    socket = await open_socket(anonymous, client)
    for n in range(3):
        _, reply = await socket.join(f"telemetry:exp_{n}")
        assert reply.payload["status"] == "ok", reply
    _, reply = await socket.join("telemetry:exp_over")
    assert reply.payload["status"] == "error", reply
    assert reply.payload["response"]["code"] == "too_many_channels", reply
    assert "at most 3 channels" in reply.payload["response"]["reason"]
    _, reply = await socket.join("telemetry:exp_0")  # joining a joined topic again replaces it
    assert reply.payload["status"] == "ok", reply
    reply = await socket.request("telemetry:exp_1", "phx_leave", join_ref=None)
    assert reply.payload["status"] == "ok", reply
    await socket.push("telemetry:exp_1", "phx_close")
    _, reply = await socket.join("telemetry:exp_over")
    assert reply.payload["status"] == "ok", reply
    await socket.nothing_else()


async def test_a_channel_subscribes_to_a_bounded_number_of_event_types(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    socket = await open_socket(anonymous, client)
    join_ref, reply = await socket.join("telemetry:all")
    for n in range(2):
        types = [f"t{n}.{i}" for i in range(60)]
        reply = await socket.request("telemetry:all", "subscribe", {"event_types": types}, join_ref=join_ref)
    assert reply.payload["status"] == "error", reply
    assert reply.payload["response"]["code"] == "too_many_event_types", reply


async def test_live_connections_per_key_are_capped(app_client: Any, anonymous: aiohttp.ClientSession) -> None:
    client = await app_client(live_max_connections_per_key=2)
    first = await open_socket(anonymous, client)
    second = await open_socket(anonymous, client)  # kept: a socket nobody holds is closed
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await open_socket(anonymous, client)
    assert caught.value.status == 429
    answer = await client.get("/api/v1/telemetry/stream")
    error = await assert_error(answer, 429, "rate_limited")
    assert "2 live connections" in error["message"]
    assert answer.headers["Retry-After"] == "1"
    other = (await create_key(client, "read"))["secret"]  # another key has its own count
    third = await open_socket(anonymous, client, other)
    await first.ws.close()

    async def reopened() -> bool:
        try:
            await open_socket(anonymous, client)
        except aiohttp.WSServerHandshakeError:
            return False
        return True

    await eventually(reopened)
    await assert_serving(client)
    await second.ws.close()
    await third.ws.close()


@pytest.mark.parametrize("workers", [0, 1], ids=["decoded on the event loop", "decoded by a worker process"])
async def test_stored_data_has_a_fixed_nesting_bound_whatever_decodes_it(app_client: Any, workers: int) -> None:
    """An ingest worker decodes with an almost empty stack, so the decoder's own bound let it keep
    `data` the API could not read back; what is stored is held to MAX_STORED_DEPTH levels."""
    from service.core.input_bounds import MAX_STORED_DEPTH

    client = await app_client(ingest_workers=workers, ingest_inline_bytes=1 if workers else 64 * 1024)

    def event_with(depth: int) -> bytes:
        data = b'{"a":' * depth + b"1" + b"}" * depth
        return (
            b'{"event_name":["crucible","model","inference"],"metadata":{"experiment_id":"exp_nest"},"data":'
            + data
            + b"}"
        )

    for depth in (MAX_STORED_DEPTH + 1, 900):
        body = b'{"events":[' + event_with(MAX_STORED_DEPTH) + b"," + event_with(depth) + b"]}"
        answer = await client.post(EVENTS, data=body, headers=JSON)
        assert answer.status == 202, await answer.text()
        result = (await answer.json())["data"]
        assert (result["accepted"], result["rejected"]) == (1, 1)
        assert result["errors"][0]["path"] == "$.events[1].data"
        assert "nested deeper than 64 levels" in result["errors"][0]["message"]
    config = b'{"experiment":{"name":"deep","config":' + b'{"a":' * 70 + b"1" + b"}" * 70 + b"}}"
    error = await assert_error(await client.post("/api/v1/experiments", data=config, headers=JSON), 400, "bad_request")
    assert "nested deeper than 64 levels" in error["message"]
    await assert_serving(client)
