"""The embedded warehouse's merges, inserts and queries run at a lower CPU priority than the API.

chDB merges parts and inserts rows on threads of this process; on a small
machine a merge or an insert takes a core away from the event loop, the ingest
workers and the log's commit thread just when ingest is busiest, and POST latency
follows (measured: a p99 of 60-100 ms at half load with every thread equal, 37 ms
with both at niceness 19). Nobody waits on a merge: merges get what is left.
Inserts decide how fresh the data is, so they sit between the two, and ingest
waits for them when they fall behind (service/warehouse/backpressure.py). Queries made
while the writer is under load sit below the inserts: level with them, 20 dashboards
polling at half load slowed the writer until data was 12 s stale and POST p99 reached
1.4 s. A query's own thread is niced, but chDB's query threads are not, so such a query
also keeps to one thread (service/warehouse/client.py, busy_query_threads). Otherwise
there is no ingest to yield to, and a query runs at the API's priority: niced, a page's
reads waited behind any other program on the machine (a browser on the same two cores).

chDB does not apply ClickHouse's own `os_threads_nice_value_merge_mutate`, so the
threads are re-niced from here: Linux lets a process lower the priority of its own
threads without privileges. The warehouse's insert and query threads lower their own
priority when they start (`lower_this_thread`); an insert is parsed on its own thread
(service/warehouse/client.py turns parallel parsing off). chDB's merge threads are found by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

MERGE_THREAD_NAMES = ("MergeMutate",)
# New threads may start at any time; a pass costs a directory listing.
RESCAN_SECONDS = 2.0
_TASKS = Path("/proc/self/task")


def _supported(nice: int) -> bool:
    return sys.platform.startswith("linux") and nice > 0


def lower_this_thread(nice: int) -> None:
    """Give the calling thread the niceness `nice` (Linux; elsewhere, or for 0, nothing)."""
    if _supported(nice):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def renice_merge_threads(nice: int, done: set[int]) -> None:
    """Give each merge thread not in `done` the niceness `nice`; add it to `done`."""
    for task in _TASKS.iterdir():
        tid = int(task.name)
        if tid in done:
            continue
        with contextlib.suppress(OSError):  # the thread may have ended since the listing
            if (task / "comm").read_text().strip().startswith(MERGE_THREAD_NAMES):
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                done.add(tid)


async def keep_merges_low(nice: int) -> None:
    """Re-nice merge threads as they appear, until cancelled."""
    if not _supported(nice):
        return
    done: set[int] = set()
    while True:
        try:
            await asyncio.to_thread(renice_merge_threads, nice, done)
        except OSError:
            logger.warning("could not lower the priority of the warehouse's merges", exc_info=True)
            return
        await asyncio.sleep(RESCAN_SECONDS)
