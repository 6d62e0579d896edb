"""The embedded warehouse's merges and inserts run at the configured niceness (Linux)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from service.core.thread_priority import MERGE_THREAD_NAMES
from service.http.appkeys import WAREHOUSE
from tests.support import eventually

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread niceness is read from /proc")


def merge_thread_niceness() -> list[int]:
    values = []
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().strip().startswith(MERGE_THREAD_NAMES):
                values.append(os.getpriority(os.PRIO_PROCESS, int(task.name)))
        except OSError:
            continue  # ended since the listing
    return values


async def test_merge_threads_yield_the_cpu(client: TestClient) -> None:
    # The app runs in this process, so its chDB merge threads are this process's threads.
    async def reniced() -> bool:
        values = merge_thread_niceness()
        return bool(values) and all(value == 19 for value in values)

    await eventually(reniced)


async def test_the_writer_inserts_below_the_api(client: TestClient) -> None:
    warehouse = client.app[WAREHOUSE]  # type: ignore[union-attr]
    insert_thread_nice = await asyncio.get_running_loop().run_in_executor(
        warehouse._insert_pool, lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    )
    assert insert_thread_nice == 10
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0  # the event loop's own thread
