"""Workers SIGKILLed at random instants (a seeded RNG), with the server up, down, and in the
middle of a checkpoint upload: the next worker on the same spool sends what the dead one
left, and counted by event id, nothing is stored twice and nothing is lost but the
events logged in the last `flush_interval` before the kill.

The workers are processes of tests/client/killed_worker.py; the one that adopts the last
spool runs in this process. Each test kills several workers in a row, each adopting the
spool of the one before (still unsent, when the server is down).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from crucible_client.upload_journal import SUFFIX as UPLOAD_RECORD_SUFFIX
from service.app import create_app
from tests.client.killed_worker import FLUSH_INTERVAL, Killed, WorkerProcess
from tests.client.test_client import assert_each_once, base_url, deliver_spool, segments, stored_events
from tests.conftest import admin_secret, bearer, make_settings
from tests.ingest.test_durability import wait_caught_up
from tests.resource_helpers import create_experiment
from tests.support import eventually, free_port, serve_processes

# Beyond the flush interval: the batcher's pass itself (taking, encoding and writing what
# was queued) and the scheduling of its thread on a shared machine.
SLACK = 0.25
RATE = 1000.0  # steps per second
SEED = 20250611


def start_worker(url: str, key: str, spool: Path, experiment_id: str, directory: Path, *extra: str) -> WorkerProcess:
    return WorkerProcess(url, key, spool, experiment_id, directory, RATE, *extra)


async def started(worker: WorkerProcess) -> None:
    deadline = time.monotonic() + 60
    while not worker.has_logged():
        assert time.monotonic() < deadline, "the worker did not start"
        await asyncio.sleep(0.02)


async def kill_at_random(worker: WorkerProcess, rng: random.Random, low: float = 0.1, high: float = 2.0) -> Killed:
    await started(worker)
    await asyncio.sleep(rng.uniform(low, high))
    return worker.kill()


async def assert_bounded(http: Any, killed: Sequence[Killed]) -> list[tuple[int, int]]:
    """Each worker's steps stored once, and only those logged in the last flush interval
    before its kill missing; (lost, bound) for each."""
    losses = []
    for worker in killed:
        events = await stored_events(http, worker.run_id, 0)
        assert_each_once(events)
        names = Counter(e["event_name"][-1] for e in events)
        assert names["started"] <= 1 and set(names) <= {"started", "progress", "checkpoint"}
        steps = Counter(int(e["measurements"]["step"]) for e in events if e["event_name"][-1] == "progress")
        twice = [step for step, count in steps.items() if count > 1]
        assert not twice, f"steps stored twice: {twice[:5]}"
        assert set(steps) <= set(range(len(worker.logged)))
        lost = worker.lost(steps)
        beyond = [step for step in lost if worker.logged_before_kill(step) > FLUSH_INTERVAL + SLACK]
        assert not beyond, (
            f"{len(lost)} steps lost, {len(beyond)} of them logged more than {FLUSH_INTERVAL + SLACK} s"
            f" before the kill: {beyond[:5]}... ({worker.logged_before_kill(beyond[0]):.3f} s before)"
        )
        losses.append((len(lost), worker.bound))
    print("lost, bound per kill:", losses)
    return losses


async def test_workers_killed_with_the_server_up_lose_at_most_their_last_flush_interval(
    client: TestClient, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    url, spool = base_url(client), tmp_path / "spool"
    killed = []
    for _ in range(3):  # each adopts the spool of the one before
        killed.append(await kill_at_random(start_worker(url, client.secret, spool, "exp_killed", tmp_path), rng))
    await asyncio.to_thread(deliver_spool, url, client.secret, spool)

    await wait_caught_up(tmp_path / "data")
    await assert_bounded(client, killed)
    assert segments(spool) == []


@pytest.mark.slow
async def test_workers_killed_with_the_server_down_lose_at_most_their_last_flush_interval(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    data_dir, spool = tmp_path / "data", tmp_path / "spool"
    secret = await admin_secret(make_settings(data_dir))
    with serve_processes(tmp_path) as make:
        server = make(free_port())  # not started: nothing answers on its port
        killed = []
        for _ in range(3):  # each adopts the spool of the one before, and cannot send it either
            worker = start_worker(server.url, secret, spool, "exp_killed_down", tmp_path)
            killed.append(await kill_at_random(worker, rng))
        assert segments(spool)
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(deliver_spool, server.url, secret, spool)

        await wait_caught_up(data_dir)
        async with aiohttp.ClientSession(server.url, headers=bearer(secret)) as http:
            await assert_bounded(http, killed)
    assert segments(spool) == []


# -- in the middle of a checkpoint upload ------------------------------------------------------


class StalledUploads:
    """Checkpoint uploads held before the service reads their body, until released: the
    worker is killed while its file is on its way."""

    def __init__(self) -> None:
        self.arrived = 0
        self.released = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "PUT" and "/checkpoints/" in request.path:
            self.arrived += 1
            await self.released.wait()
        return await handler(request)


async def checkpoints_of(http: TestClient, run_id: str) -> list[dict[str, Any]]:
    """The run's checkpoints; none while the run is not known yet."""
    async with http.get(f"/api/v1/runs/{run_id}/checkpoints") as answer:
        if answer.status == 404:
            return []
        assert answer.status == 200, await answer.text()
        listed: list[dict[str, Any]] = (await answer.json())["data"]
        return listed


async def assert_checkpoint_once(http: TestClient, run_id: str, content: bytes) -> None:
    """One checkpoint event stored, and its file uploaded whole."""
    events = await stored_events(http, run_id, 0)
    assert Counter(e["event_name"][-1] for e in events)["checkpoint"] == 1
    [checkpoint] = await checkpoints_of(http, run_id)
    download = await http.get(checkpoint["download_url"])
    assert download.status == 200 and await download.read() == content


CHECKPOINT_BYTES = 8 * 1024 * 1024  # more than the socket buffers: the worker is stuck sending it


async def test_a_worker_killed_in_the_middle_of_a_checkpoint_upload(aiohttp_client: Any, tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    stalled = StalledUploads()
    settings = make_settings(tmp_path / "data")
    secret = await admin_secret(settings)
    app = create_app(settings)
    app.middlewares.insert(0, stalled.middleware)
    service = await aiohttp_client(app, headers=bearer(secret))
    service.secret = secret
    experiment = await create_experiment(service)
    url, spool = base_url(service), tmp_path / "spool"
    weights = tmp_path / "weights.pt"
    content = os.urandom(CHECKPOINT_BYTES)
    weights.write_bytes(content)

    worker = start_worker(url, service.secret, spool, experiment["id"], tmp_path, "--checkpoint", str(weights))
    await started(worker)

    async def uploading() -> bool:
        return stalled.arrived > 0

    await eventually(uploading, timeout=30)  # the upload is under way...
    await asyncio.sleep(rng.uniform(0.3, 1.5))  # while the worker logs on
    killed = worker.kill()  # ... when the worker dies
    assert list(spool.rglob("*" + UPLOAD_RECORD_SUFFIX))  # what the next one needs to finish it
    stalled.released.set()

    await asyncio.to_thread(deliver_spool, url, service.secret, spool)  # uploads it again, then announces it
    await wait_caught_up(tmp_path / "data")
    await assert_bounded(service, [killed])
    await assert_checkpoint_once(service, killed.run_id, content)
    assert list(spool.rglob("*" + UPLOAD_RECORD_SUFFIX)) == []


async def test_a_checkpoint_announced_by_a_worker_killed_before_it_forgot_the_upload_is_stored_once(
    client: TestClient, tmp_path: Path
) -> None:
    experiment = await create_experiment(client)
    url, spool = base_url(client), tmp_path / "spool"
    weights = tmp_path / "weights.pt"
    content = os.urandom(1024 * 1024)
    weights.write_bytes(content)
    # The worker keeps the upload's record after its event is in the spool, as if killed in between.
    extra = ("--checkpoint", str(weights), "--keep-upload-records")
    worker = start_worker(url, client.secret, spool, experiment["id"], tmp_path, *extra)
    await started(worker)

    async def announced() -> bool:
        return any(c["reported_at"] is not None for c in await checkpoints_of(client, worker.run_id))

    await eventually(announced, timeout=30)  # the server has its file and its event...
    killed = worker.kill()  # ... and the worker dies with the upload's record still there
    assert list(spool.rglob("*" + UPLOAD_RECORD_SUFFIX))

    await asyncio.to_thread(deliver_spool, url, client.secret, spool)  # uploads and announces it again
    await wait_caught_up(tmp_path / "data")
    await assert_bounded(client, [killed])
    await assert_checkpoint_once(client, killed.run_id, content)  # the server replayed the announcement's key
    assert list(spool.rglob("*" + UPLOAD_RECORD_SUFFIX)) == []
