"""Hostile requests: each is a 4xx in API.md's error shape, and the server keeps serving.

Deep JSON nesting, compression bombs, malformed HTTP (raw sockets, since aiohttp's client
will not send it), clients that vanish mid-body, and WebSocket abuse (unmasked frames,
deeply nested frames, too many channels or sockets).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.ingest_workers import IngestWorkers
from tests.live_support import inference

DEEP = 5_000  # beyond the decoder's recursion limit however little of the stack is in use
EVENTS = "/api/v1/telemetry/events"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


async def assert_error(answer: aiohttp.ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """`answer` is `status` in API.md's error shape: {"error": {"code", "message", "details"}}."""
    text = await answer.text()
    assert answer.status == status, text
    assert answer.content_type == "application/json", text
    error = (await answer.json())["error"]
    assert set(error) >= {"code", "message", "details"}, error
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


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
        answer = await client.post(EVENTS, data=body)
        assert answer.status in (400, 422)
        await assert_error(answer, answer.status)
    await assert_serving(client)


async def test_nesting_the_decoder_takes_is_accepted(client: TestClient) -> None:
    """Nesting within the documented bound is data like any other."""
    event = inference("exp_deep", data={"a": __import__("json").loads(deep_object(200))})
    answer = await client.post(EVENTS, json={"events": [event]})
    assert answer.status == 202, await answer.text()


async def test_deep_nesting_in_a_worker_process_is_400_and_the_worker_lives(tmp_path: Path) -> None:
    """A body of 64 KiB or more is decoded by a worker process; nesting must not kill it."""
    workers = IngestWorkers(1, inline_below_bytes=1)
    await workers.start()
    try:
        (pid,) = workers.pids()
        body = b'{"events":[{"event_name":["a"],"data":' + deep_object(DEEP) + b"}]}" + b" " * 70_000
        import datetime as dt

        from service.ingest_batch import BatchRefused

        with pytest.raises(BatchRefused) as refused:
            await workers.prepare(body, 10, "b1", dt.datetime.now(dt.UTC))
        assert refused.value.status == 400
        assert workers.pids() == {pid}  # the same process answered, and lives
    finally:
        await workers.stop()


# -- compressed bodies -----------------------------------------------------------------------


def gzip_bomb(inflated: int) -> bytes:
    return gzip.compress(b"\0" * inflated, compresslevel=1)


async def test_a_compression_bomb_is_413_and_inflated_no_further_than_the_limit(app_client: Any) -> None:
    client = await app_client(max_body_bytes=1024 * 1024)
    bomb = gzip_bomb(256 * 1024 * 1024)
    answer = await client.post(EVENTS, data=bomb, headers={"Content-Encoding": "gzip"})
    error = await assert_error(answer, 413, "payload_too_large")
    assert str(1024 * 1024) in error["message"]
    answer = await client.post("/api/v1/experiments", data=bomb, headers={"Content-Encoding": "gzip"})
    await assert_error(answer, 413, "payload_too_large")
    await assert_serving(client)


async def test_inflation_stops_at_the_limit_in_small_steps() -> None:
    """The bound and the steps between which the event loop serves others."""
    from service.input_bounds import INFLATE_STEP_BYTES, inflate
    from service.problem import Problem

    seen = 0
    with pytest.raises(Problem) as refused:
        async for piece in inflate(gzip_bomb(64 * 1024 * 1024), "gzip", 1024 * 1024):
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
        answer = await client.post(EVENTS, data=data, headers={"Content-Encoding": encoding})
        assert answer.status == 202, await answer.text()
    experiment = gzip.compress(json.dumps({"experiment": {"name": "gzipped"}}).encode())
    answer = await client.post("/api/v1/experiments", data=experiment, headers={"Content-Encoding": "gzip"})
    assert answer.status == 201, await answer.text()


async def test_unknown_or_broken_encodings_are_refused(client: TestClient) -> None:
    body = b'{"events":[]}'
    await assert_error(await client.post(EVENTS, data=body, headers={"Content-Encoding": "br"}), 415)
    await assert_error(await client.post(EVENTS, data=body, headers={"Content-Encoding": "gzip, gzip"}), 415)
    await assert_error(await client.post(EVENTS, data=body, headers={"Content-Encoding": "gzip"}), 400, "bad_request")
    truncated = gzip.compress(body * 100)[:-20]
    answer = await client.post(EVENTS, data=truncated, headers={"Content-Encoding": "gzip"})
    await assert_error(answer, 400, "bad_request")
    deep = gzip.compress(b'{"experiment":{"name":"x","config":' + nested(DEEP) + b"}}")
    answer = await client.post("/api/v1/experiments", data=deep, headers={"Content-Encoding": "gzip"})
    await assert_error(answer, 400, "bad_request")
    await assert_serving(client)


async def test_a_checkpoint_is_stored_as_the_bytes_sent_whatever_its_content_encoding(client: TestClient) -> None:
    from tests.test_checkpoints import download, put, start_run

    run_id = "run_gzipped"
    await start_run(client, run_id)
    sent = gzip_bomb(8 * 1024 * 1024)  # a gzip file, not a body to inflate
    await put(client, run_id, "ckpt_gz", sent, 201, headers={"Content-Encoding": "gzip"})
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
