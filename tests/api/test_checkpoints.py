"""Checkpoint files: streamed upload, download with ranges and entity tags, safety of the store's paths, S3."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from schemas.resources import CheckpointUploaded
from service.http.appkeys import PROJECTOR, SETTINGS
from service.http.downloads import attachment, safe_extension
from service.settings import SettingsError, load
from tests.keys_support import auth, create_key
from tests.resource_helpers import create_experiment, error
from tests.support import eventually, free_port

EVENTS = "/api/v1/telemetry/events"
MiB = 1024 * 1024


def checkpoint_url(run_id: str, checkpoint_id: str) -> str:
    return f"/api/v1/runs/{run_id}/checkpoints/{checkpoint_id}"


def download_url(run_id: str, checkpoint_id: str) -> str:
    return checkpoint_url(run_id, checkpoint_id) + "/download"


def random_bytes(size: int, seed: int = 1) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() + os.urandom(size - 32)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def report(client: TestClient, action: str, run_id: str, experiment_id: str, **metadata: str) -> None:
    event = {
        "event_name": ["crucible", "run", action],
        "metadata": {"run_id": run_id, "experiment_id": experiment_id, **metadata},
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
    }
    answer = await client.post(EVENTS, json={"events": [event]})
    assert answer.status == 202, await answer.text()
    assert (await answer.json())["data"]["rejected"] == 0


async def start_run(client: TestClient, run_id: str = "run_ckpt1") -> str:
    """A run as a worker starts one (telemetry, routed into the resources log); returns its experiment id."""
    experiment = await create_experiment(client, f"checkpoints of {run_id}")
    await report(client, "started", run_id, experiment["id"])

    async def known() -> bool:
        return run_id in client.app[PROJECTOR].state.runs

    await eventually(known)
    return str(experiment["id"])


async def put(client: TestClient, run_id: str, checkpoint_id: str, body: Any, status: int, **kwargs: Any) -> Any:
    answer = await client.put(checkpoint_url(run_id, checkpoint_id), data=body, **kwargs)
    text = await answer.text()
    assert answer.status == status, f"PUT {run_id}/{checkpoint_id}: {answer.status} {text}"
    return answer, await answer.json()


async def refused(client: TestClient, checkpoint_id: str, status: int, code: str, body: Any, **kwargs: Any) -> Any:
    """An upload to run_ckpt1 that must fail with `status` and `code`; returns the error."""
    return await error(client, "PUT", checkpoint_url("run_ckpt1", checkpoint_id), status, code, data=body, **kwargs)


async def download(client: TestClient, run_id: str, checkpoint_id: str, status: int = 200, **headers: str) -> Any:
    answer = await client.get(download_url(run_id, checkpoint_id), headers=headers)
    body = await answer.read()
    assert answer.status == status, f"GET {run_id}/{checkpoint_id}: {answer.status} {body[:300]!r}"
    return answer, body


def store_root(client: TestClient) -> Path:
    return client.app[SETTINGS].data_path / "artifacts"


def run_folder(client: TestClient, run_id: str) -> Path:
    return store_root(client) / "checkpoints" / run_id


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")} if folder.exists() else set()


async def chunked(data: bytes, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked transfer encoding), as a streaming client sends it."""
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


# -- upload and download --------------------------------------------------------------------


async def test_round_trip_is_byte_identical_and_streams_past_client_max_size(app_client: Any) -> None:
    # max_body_bytes sets aiohttp's client_max_size: a streamed upload is not held to it.
    client = await app_client(max_body_bytes=64 * 1024)
    await start_run(client)
    data = random_bytes(3 * MiB + 123)
    answer, body = await put(client, "run_ckpt1", "ckpt_1", chunked(data), 201)
    file = body["data"]
    assert file["id"] == "ckpt_1" and file["run_id"] == "run_ckpt1"
    assert file["size"] == len(data) and file["sha256"] == sha256(data)
    assert file["download_url"] == download_url("run_ckpt1", "ckpt_1")
    assert dt.datetime.fromisoformat(file["uploaded_at"]).tzinfo is not None
    assert (run_folder(client, "run_ckpt1") / "ckpt_1").read_bytes() == data
    assert files_under(run_folder(client, "run_ckpt1")) == {"ckpt_1"}  # no staging file left

    answer, got = await download(client, "run_ckpt1", "ckpt_1")
    assert got == data
    assert answer.headers["Content-Length"] == str(len(data))
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert answer.headers["ETag"] == f'"{sha256(data)}"'
    assert answer.headers["Accept-Ranges"] == "bytes"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="ckpt_1.ckpt"'


async def test_ranges(client: TestClient) -> None:
    await start_run(client)
    data = random_bytes(2 * MiB + 7)
    size = len(data)
    await put(client, "run_ckpt1", "ckpt_r", data, 201)
    cases = {
        "bytes=0-99": (0, 99),  # first bytes
        "bytes=1000000-1999999": (1_000_000, 1_999_999),  # middle
        "bytes=-100": (size - 100, size - 1),  # suffix
        "bytes=100-": (100, size - 1),  # open-ended
        f"bytes={size - 10}-{size + 1000}": (size - 10, size - 1),  # past the end: clipped
        f"bytes=-{size * 2}": (0, size - 1),  # a suffix longer than the file: all of it
    }
    for header, (first, last) in cases.items():
        answer, got = await download(client, "run_ckpt1", "ckpt_r", 206, Range=header)
        assert got == data[first : last + 1], header
        assert answer.headers["Content-Range"] == f"bytes {first}-{last}/{size}", header
        assert answer.headers["Content-Length"] == str(last - first + 1), header
        assert answer.headers["ETag"] == f'"{sha256(data)}"'

    for header in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        failure = await error(
            client, "GET", download_url("run_ckpt1", "ckpt_r"), 416, "range_not_satisfiable", headers={"Range": header}
        )
        assert "Range" in failure["details"]
        answer = await client.get(download_url("run_ckpt1", "ckpt_r"), headers={"Range": header})
        assert answer.headers["Content-Range"] == f"bytes */{size}"

    # Several ranges, another unit, malformed: the whole file (documented choice), never multipart.
    for header in ("bytes=0-1,5-6", "items=0-5", "bytes=abc", "bytes=10-5"):
        answer, got = await download(client, "run_ckpt1", "ckpt_r", 200, Range=header)
        assert got == data and "Content-Range" not in answer.headers, header

    # If-Range: the range only while the file is still the one the client has.
    etag = f'"{sha256(data)}"'
    _, got = await download(client, "run_ckpt1", "ckpt_r", 206, Range="bytes=0-9", **{"If-Range": etag})
    assert got == data[:10]
    _, got = await download(client, "run_ckpt1", "ckpt_r", 200, Range="bytes=0-9", **{"If-Range": '"other"'})
    assert got == data


async def test_entity_tags_and_head(client: TestClient) -> None:
    await start_run(client)
    data = random_bytes(100_000)
    etag = f'"{sha256(data)}"'
    await put(client, "run_ckpt1", "ckpt_e", data, 201)

    for current in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        answer, got = await download(client, "run_ckpt1", "ckpt_e", 304, **{"If-None-Match": current})
        assert got == b"" and answer.headers["ETag"] == etag
    _, got = await download(client, "run_ckpt1", "ckpt_e", 200, **{"If-None-Match": '"stale"'})
    assert got == data

    answer = await client.head(download_url("run_ckpt1", "ckpt_e"))
    assert answer.status == 200
    assert answer.headers["Content-Length"] == str(len(data))
    assert answer.headers["ETag"] == etag
    assert answer.headers["Content-Disposition"] == 'attachment; filename="ckpt_e.ckpt"'
    assert await answer.read() == b""
    answer = await client.head(download_url("run_ckpt1", "ckpt_e"), headers={"Range": "bytes=-10"})
    assert (
        answer.status == 206
        and answer.headers["Content-Range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"
    )
    answer = await client.head(download_url("run_ckpt1", "ckpt_e"), headers={"If-None-Match": etag})
    assert answer.status == 304
    answer = await client.head(download_url("run_ckpt1", "nothing"))
    assert answer.status == 404


async def test_an_empty_file(client: TestClient) -> None:
    await start_run(client)
    _, body = await put(client, "run_ckpt1", "ckpt_empty", b"", 201)
    assert body["data"]["size"] == 0 and body["data"]["sha256"] == sha256(b"")
    answer, got = await download(client, "run_ckpt1", "ckpt_empty")
    assert got == b"" and answer.headers["Content-Length"] == "0"
    await error(
        client,
        "GET",
        download_url("run_ckpt1", "ckpt_empty"),
        416,
        "range_not_satisfiable",
        headers={"Range": "bytes=0-"},
    )


async def test_the_reported_path_names_the_download_but_never_a_file(client: TestClient) -> None:
    experiment_id = await start_run(client)
    await put(client, "run_ckpt1", "ckpt_pt", b"weights", 201)
    await report(
        client,
        "checkpoint",
        "run_ckpt1",
        experiment_id,
        checkpoint_id="ckpt_pt",
        path="/checkpoints/run_ckpt1/epoch_40.PT",
    )
    await put(client, "run_ckpt1", "ckpt_evil", b"other weights", 201)
    await report(
        client, "checkpoint", "run_ckpt1", experiment_id, checkpoint_id="ckpt_evil", path='..\\..\\etc\\passwd.p"t; x=y'
    )

    async def named() -> bool:
        answer, _ = await download(client, "run_ckpt1", "ckpt_pt")
        return bool(answer.headers["Content-Disposition"] == 'attachment; filename="ckpt_pt.pt"')

    await eventually(named)
    answer, got = await download(client, "run_ckpt1", "ckpt_evil")
    assert got == b"other weights"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="ckpt_evil.ckpt"'


def test_safe_extensions_and_quoting() -> None:
    assert safe_extension("/ckpts/epoch_40.pt") == ".pt"
    assert safe_extension("C:\\ckpts\\model.SafeTensors") == ".safetensors"
    assert safe_extension("model.tar.gz") == ".gz"
    for unsafe in (None, "", "/ckpts/noext", ".bashrc", "x.p t", 'x."pt', "x." + "a" * 17, "../..", "x.pt/"):
        assert safe_extension(unsafe) == ".ckpt", unsafe
    assert attachment('we"ird\\name') == 'attachment; filename="we\\"ird\\\\name"'


# -- one checkpoint id, one file --------------------------------------------------------------


async def test_the_same_file_again_is_200_another_is_409_and_replaces_nothing(client: TestClient) -> None:
    await start_run(client)
    data = random_bytes(300_000)
    _, first = await put(client, "run_ckpt1", "ckpt_1", data, 201)
    _, again = await put(client, "run_ckpt1", "ckpt_1", data, 200)
    assert again == first  # the same upload, uploaded_at included: nothing new was recorded
    _, again = await put(client, "run_ckpt1", "ckpt_1", data, 200, headers={"X-Content-SHA256": sha256(data)})
    assert again == first

    other = random_bytes(300_000, seed=2)
    failure = await refused(client, "ckpt_1", 409, "conflict", other)
    assert sha256(data) in failure["message"]
    _, got = await download(client, "run_ckpt1", "ckpt_1")
    assert got == data
    assert files_under(run_folder(client, "run_ckpt1")) == {"ckpt_1"}
    history = client.app[PROJECTOR].state.history("run_ckpt1")
    assert sum(isinstance(entry.event, CheckpointUploaded) for entry in history) == 1


async def test_idempotency_key_replays_the_first_answer(client: TestClient) -> None:
    await start_run(client)
    data = random_bytes(50_000)
    key = {"Idempotency-Key": "upload-ckpt-7"}
    _, first = await put(client, "run_ckpt1", "ckpt_7", data, 201, headers=key)
    answer, again = await put(client, "run_ckpt1", "ckpt_7", data, 201, headers=key)
    assert again == first and answer.headers["Idempotent-Replayed"] == "true"
    await refused(client, "ckpt_7", 422, "validation_error", random_bytes(50_000, seed=3), headers=key)
    _, got = await download(client, "run_ckpt1", "ckpt_7")
    assert got == data


async def test_a_body_that_does_not_match_its_sha256_is_422_and_nothing_is_kept(client: TestClient) -> None:
    await start_run(client)
    data = random_bytes(1 * MiB)
    failure = await refused(
        client, "ckpt_bad", 422, "validation_error", data, headers={"X-Content-SHA256": sha256(b"something else")}
    )
    assert sha256(data) in failure["details"]["X-Content-SHA256"][0]
    await refused(client, "ckpt_bad", 422, "validation_error", data, headers={"X-Content-SHA256": "not-hex"})
    assert files_under(run_folder(client, "run_ckpt1")) == set()
    assert client.app[PROJECTOR].state.runs["run_ckpt1"].uploads == {}
    await error(client, "GET", download_url("run_ckpt1", "ckpt_bad"), 404, "not_found")
    _, body = await put(client, "run_ckpt1", "ckpt_bad", data, 201, headers={"X-Content-SHA256": sha256(data).upper()})
    assert body["data"]["sha256"] == sha256(data)


async def test_over_the_size_limit_is_413_and_leaves_nothing(app_client: Any) -> None:
    client = await app_client(checkpoint_max_bytes=1 * MiB)
    await start_run(client)
    data = random_bytes(3 * MiB)
    # Declared too large: refused before reading. Streamed (no length): refused once past the limit.
    await refused(client, "ckpt_big", 413, "payload_too_large", data)
    await refused(client, "ckpt_big", 413, "payload_too_large", chunked(data))
    assert files_under(run_folder(client, "run_ckpt1")) == set()
    assert client.app[PROJECTOR].state.runs["run_ckpt1"].uploads == {}
    await put(client, "run_ckpt1", "ckpt_big", data[: 1 * MiB], 201)  # exactly the limit is fine
    assert files_under(run_folder(client, "run_ckpt1")) == {"ckpt_big"}


async def test_unknown_runs_missing_files_and_bad_ids(client: TestClient) -> None:
    await start_run(client)
    failure = await error(client, "PUT", checkpoint_url("run_nobody", "ckpt_1"), 404, "not_found", data=b"x")
    assert "run_nobody" in failure["message"]
    await error(client, "GET", download_url("run_nobody", "ckpt_1"), 404, "not_found")
    await error(client, "GET", download_url("run_ckpt1", "ckpt_never"), 404, "not_found")
    for run_id, checkpoint_id, field in (
        ("-run", "ckpt", "run_id"),
        ("run_ckpt1", "ckpt$", "checkpoint_id"),
        ("run_ckpt1", "x" * 200, "checkpoint_id"),
    ):
        for method, url in (
            ("PUT", checkpoint_url(run_id, checkpoint_id)),
            ("GET", download_url(run_id, checkpoint_id)),
        ):
            failure = await error(client, method, url, 422, "validation_error", data=b"x")
            assert list(failure["details"]) == [field]
    assert not (store_root(client) / "checkpoints" / "run_nobody").exists()


async def test_scopes_workers_upload_readers_download(client: TestClient) -> None:
    await start_run(client)
    worker = await create_key(client, "ingest")
    reader = await create_key(client, "read")
    answer = await client.put(checkpoint_url("run_ckpt1", "ckpt_s"), data=b"abc", headers=auth(worker["secret"]))
    assert answer.status == 201, await answer.text()
    assert "X-RateLimit-Limit" in answer.headers  # counted in the write class
    await refused(client, "ckpt_s", 403, "forbidden", b"abc", headers=auth(reader["secret"]))
    await error(client, "GET", download_url("run_ckpt1", "ckpt_s"), 403, "forbidden", headers=auth(worker["secret"]))
    answer = await client.get(download_url("run_ckpt1", "ckpt_s"), headers=auth(reader["secret"]))
    assert answer.status == 200 and await answer.read() == b"abc"
    await error(client, "GET", download_url("run_ckpt1", "ckpt_s"), 401, "unauthorized", headers={"Authorization": ""})


async def test_a_restarted_service_serves_what_was_uploaded(app_client: Any) -> None:
    client = await app_client()
    await start_run(client)
    data = random_bytes(1 * MiB)
    _, first = await put(client, "run_ckpt1", "ckpt_1", data, 201)
    await client.close()

    restarted = await app_client()
    _, got = await download(restarted, "run_ckpt1", "ckpt_1")
    assert got == data
    _, again = await put(restarted, "run_ckpt1", "ckpt_1", data, 200)
    assert again == first


# -- nothing outside the store ----------------------------------------------------------------


async def raw_request(client: TestClient, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send the request line exactly as written (no client-side normalisation of `..` or escapes)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: {client.host}\r\nAuthorization: Bearer {client.secret}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest


TRAVERSALS = [
    "..%2F..%2F..%2Foutside%2Fsecret",
    "%2e%2e%2f%2e%2e%2foutside%2fsecret",
    "%2E%2E",
    "..",
    "%2Ftmp%2Fsecret",
    "..%5C..%5Coutside%5Csecret",
    "..\\..\\outside\\secret",
    "%00secret",
]


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_bytes(b"TOP SECRET")
    yield folder


async def test_paths_cannot_leave_the_store(client: TestClient, outside: Path) -> None:
    await start_run(client)
    await put(client, "run_ckpt1", "ckpt_1", b"legit", 201)
    before = files_under(outside.parent / "outside") | files_under(store_root(client))
    prefixes = [
        "/api/v1/runs/run_ckpt1/checkpoints/{}",
        "/api/v1/runs/{}/checkpoints/ckpt_1",
        "/api/v1/runs/run_ckpt1/checkpoints/../../../../outside/{}",
        "/api/v1/runs/run_ckpt1/checkpoints/{}/x",
    ]
    for prefix in prefixes:
        for unsafe in TRAVERSALS:
            target = prefix.format(unsafe)
            status, answer = await raw_request(client, "PUT", target, b"OVERWRITTEN")
            assert status in (400, 404, 405, 422), (target, status, answer)
            status, answer = await raw_request(client, "GET", target + "/download")
            assert status in (400, 404, 422), (target, status, answer)
            assert b"TOP SECRET" not in answer, target
    assert (outside / "secret").read_bytes() == b"TOP SECRET"
    assert files_under(outside) == {"secret"}
    assert files_under(outside.parent / "outside") | files_under(store_root(client)) == before
    _, got = await download(client, "run_ckpt1", "ckpt_1")
    assert got == b"legit"


async def test_symlinks_planted_in_the_store_are_not_followed(client: TestClient, outside: Path) -> None:
    await start_run(client, "run_ckpt1")
    await start_run(client, "run_linked")
    await put(client, "run_ckpt1", "ckpt_1", b"legit", 201)
    folder = run_folder(client, "run_ckpt1")

    # The file replaced by a symlink to a file outside: a download refuses it.
    (folder / "ckpt_1").unlink()
    (folder / "ckpt_1").symlink_to(outside / "secret")
    answer = await client.get(download_url("run_ckpt1", "ckpt_1"))
    assert answer.status == 500 and b"TOP SECRET" not in await answer.read()
    assert (await answer.json())["error"]["code"] == "storage_error"

    # A symlink where a new checkpoint will go: the upload is refused, the link's target untouched.
    (folder / "ckpt_2").symlink_to(outside / "secret")
    await refused(client, "ckpt_2", 500, "storage_error", b"OVERWRITTEN")
    assert (folder / "ckpt_2").is_symlink() and (outside / "secret").read_bytes() == b"TOP SECRET"
    assert client.app[PROJECTOR].state.runs["run_ckpt1"].uploads.keys() == {"ckpt_1"}
    (folder / "ckpt_2").unlink()
    await put(client, "run_ckpt1", "ckpt_2", b"new weights", 201)

    # A run's folder that is a symlink to a folder outside: neither written through nor read through.
    run_folder(client, "run_linked").symlink_to(outside, target_is_directory=True)
    answer = await client.put(checkpoint_url("run_linked", "secret"), data=b"OVERWRITTEN")
    assert answer.status == 500, await answer.text()
    assert (await answer.json())["error"]["code"] == "storage_error"
    assert files_under(outside) == {"secret"} and (outside / "secret").read_bytes() == b"TOP SECRET"

    # The same for the folder of a run that has a file: a download does not read through it.
    (folder / "ckpt_2").rename(outside / "ckpt_2")
    folder.rename(folder.with_name("moved"))
    folder.symlink_to(outside, target_is_directory=True)
    answer = await client.get(download_url("run_ckpt1", "ckpt_2"))
    assert answer.status == 500 and b"new weights" not in await answer.read()


# -- settings ---------------------------------------------------------------------------------


def test_settings_of_the_store() -> None:
    assert load({}, {}).checkpoint_max_bytes == 10 * 1024**3
    assert load({}, {"CRUCIBLE_CHECKPOINT_MAX_BYTES": "1000"}).checkpoint_max_bytes == 1000
    assert load({"artifact_store": "s3://bucket/p?endpoint=http://127.0.0.1:9000"}, {}).artifact_store
    for bad in ("s3://", "s3://bucket?endpoint=ftp://x", "s3://bucket?secret=1", "ftp://host/x"):
        with pytest.raises(SettingsError, match="artifact-store"):
            load({"artifact_store": bad}, {})


# -- S3-compatible object storage ---------------------------------------------------------------


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local S3-compatible server (moto's, over HTTP on loopback) with the bucket `checkpoints`."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"no local S3-compatible server: moto[server] is not installed ({exc})")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


async def s3_client(endpoint: str) -> Any:
    from aiobotocore.session import get_session

    return get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1")


async def test_s3_store_round_trip(app_client: Any, s3_endpoint: str) -> None:
    async with await s3_client(s3_endpoint) as s3:
        await s3.create_bucket(Bucket="checkpoints")
        client = await app_client(
            artifact_store=f"s3://checkpoints/team-a?endpoint={s3_endpoint}", checkpoint_max_bytes=20 * MiB
        )
        await start_run(client)
        big = random_bytes(17 * MiB + 5)  # three parts of a multipart upload
        small = random_bytes(1000, seed=2)  # one PutObject
        _, body = await put(client, "run_ckpt1", "ckpt_big", chunked(big, 1 * MiB), 201)
        assert body["data"]["sha256"] == sha256(big) and body["data"]["size"] == len(big)
        await put(client, "run_ckpt1", "ckpt_small", small, 201)
        stored = await s3.get_object(Bucket="checkpoints", Key="team-a/checkpoints/run_ckpt1/ckpt_big")
        assert sha256(await stored["Body"].read()) == sha256(big)

        _, got = await download(client, "run_ckpt1", "ckpt_big")
        assert got == big
        _, got = await download(client, "run_ckpt1", "ckpt_small")
        assert got == small
        _, got = await download(client, "run_ckpt1", "ckpt_big", 206, Range="bytes=9000000-9000099")
        assert got == big[9_000_000:9_000_100]
        _, got = await download(client, "run_ckpt1", "ckpt_big", 206, Range="bytes=-100")
        assert got == big[-100:]

        await put(client, "run_ckpt1", "ckpt_small", small, 200)
        await refused(client, "ckpt_small", 409, "conflict", b"other")
        await refused(client, "ckpt_over", 413, "payload_too_large", chunked(random_bytes(21 * MiB), 1 * MiB))
        await refused(
            client,
            "ckpt_mismatch",
            422,
            "validation_error",
            chunked(big, 1 * MiB),
            headers={"X-Content-SHA256": sha256(b"")},
        )
        listing = await s3.list_objects_v2(Bucket="checkpoints")
        keys = sorted(item["Key"] for item in listing["Contents"])
        assert keys == ["team-a/checkpoints/run_ckpt1/ckpt_big", "team-a/checkpoints/run_ckpt1/ckpt_small"]
        assert (await s3.list_multipart_uploads(Bucket="checkpoints")).get("Uploads", []) == []
        _, got = await download(client, "run_ckpt1", "ckpt_small")
        assert got == small


async def test_an_upload_cut_short_keeps_nothing(client: TestClient) -> None:
    await start_run(client)
    _reader, writer = await asyncio.open_connection(client.host, client.port)
    head = (
        f"PUT {checkpoint_url('run_ckpt1', 'ckpt_cut')} HTTP/1.1\r\nHost: {client.host}\r\n"
        f"Authorization: Bearer {client.secret}\r\nContent-Length: {4 * MiB}\r\n\r\n"
    )
    writer.write(head.encode() + random_bytes(1 * MiB))
    await writer.drain()

    async def staging() -> bool:
        return any(name.startswith(".upload-") for name in files_under(run_folder(client, "run_ckpt1")))

    await eventually(staging, interval=0.01)
    writer.close()  # the client goes away three quarters short

    async def cleaned() -> bool:
        return files_under(run_folder(client, "run_ckpt1")) == set()

    await eventually(cleaned)
    assert client.app[PROJECTOR].state.runs["run_ckpt1"].uploads == {}
