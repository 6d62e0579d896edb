"""Ingest worker processes: a worker that dies costs at most its own batch, and workers end with the app."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import psutil

from service.http.appkeys import INGESTOR
from tests.ingest.test_ingest_api import URL, assert_error_shape, event, stored_count
from tests.support import eventually


def worker_pids(client: Any) -> set[int]:
    return set(client.app[INGESTOR].workers.pids())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True  # already reaped by the server's child watcher


async def killed(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)

    async def dead() -> bool:
        return gone(pid)

    await eventually(dead)


async def test_a_worker_that_died_idle_is_replaced_and_no_batch_is_lost(app_client: Any) -> None:
    client = await app_client(ingest_workers=1, ingest_inline_bytes=1)
    (first,) = worker_pids(client)
    await killed(first)

    # Prepared by a worker, or in place while the replacement starts: either way, taken.
    answer = await client.post(URL, json={"events": [event(), event()]})
    assert answer.status == 202

    async def replaced() -> bool:
        pids = worker_pids(client)
        return bool(pids) and first not in pids

    await eventually(replaced)

    async def stored() -> bool:
        return await stored_count(client) == 2

    await eventually(stored)


async def test_a_batch_whose_worker_dies_is_prepared_by_another(app_client: Any) -> None:
    client = await app_client(ingest_workers=1, ingest_inline_bytes=1)
    (first,) = worker_pids(client)
    os.kill(first, signal.SIGSTOP)  # it takes the next batch, and never answers
    # Large enough that writing it into the stopped worker's pipe cannot finish.
    posted = asyncio.create_task(client.post(URL, json={"events": [event(data={"pad": "x" * 100})] * 1000}))
    await asyncio.sleep(0.5)
    assert not posted.done()
    await killed(first)

    assert (await posted).status == 202

    async def stored() -> bool:
        return await stored_count(client) == 1000

    await eventually(stored)


async def test_a_batch_two_workers_die_on_is_503_and_appends_nothing(app_client: Any) -> None:
    client = await app_client(ingest_workers=2, ingest_inline_bytes=1)
    first, second = worker_pids(client)
    for pid in (first, second):
        os.kill(pid, signal.SIGSTOP)
    lost = asyncio.create_task(client.post(URL, json={"events": [event(data={"pad": "x" * 100})] * 1000}))
    holders = []
    for _ in range(2):  # the batch goes to one, then to the other
        await asyncio.sleep(0.5)
        assert not lost.done()
        (holder,) = client.app[INGESTOR].workers.busy_pids()
        holders.append(holder)
        await killed(holder)
    assert sorted(holders) == sorted([first, second])

    answer = await lost
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "1"
    assert "nothing was written" in assert_error_shape(await answer.json(), "unavailable")["message"]

    again = await client.post(URL, json={"events": [event(), event(), event()]})
    assert again.status == 202

    async def replaced() -> bool:
        pids = worker_pids(client)
        return len(pids) == 2 and not pids & {first, second}

    await eventually(replaced)

    async def stored() -> bool:
        return await stored_count(client) == 3  # the lost batch appended nothing

    await eventually(stored)
    await asyncio.sleep(0.5)
    assert await stored_count(client) == 3


async def test_small_bodies_are_decoded_in_place(app_client: Any) -> None:
    client = await app_client(ingest_workers=1, ingest_inline_bytes=64 * 1024)
    (worker,) = worker_pids(client)
    busy_before = sum(psutil.Process(worker).cpu_times()[:2])
    for _ in range(20):
        assert (await client.post(URL, json={"events": [event()]})).status == 202
    assert sum(psutil.Process(worker).cpu_times()[:2]) - busy_before < 0.05


async def test_workers_end_with_the_app(app_client: Any) -> None:
    client = await app_client(ingest_workers=2)
    pids = worker_pids(client)
    assert len(pids) == 2
    await client.close()
    assert all(gone(pid) for pid in pids)
