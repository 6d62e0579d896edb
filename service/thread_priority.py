"""Background merges of the embedded warehouse run at a lower CPU priority than the API.

chDB merges parts on threads of this process (named `MergeMutate`); on a small machine
a large merge takes a core away from the event loop and the log's commit thread just
when ingest is busiest, and POST latency follows. chDB does not apply ClickHouse's own
`os_threads_nice_value_merge_mutate`, so the threads are re-niced from here: Linux lets
a process lower the priority of its own threads without privileges. Merges still get
the CPU nothing else wants, so parts keep being merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

MERGE_THREAD_NAMES = ("MergeMutate",)
# New merge threads may start at any time; a pass costs a directory listing.
RESCAN_SECONDS = 2.0
_TASKS = Path("/proc/self/task")


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
    """Re-nice merge threads as they appear, until cancelled (Linux only; elsewhere nothing)."""
    if not sys.platform.startswith("linux") or nice <= 0:
        return
    done: set[int] = set()
    while True:
        try:
            await asyncio.to_thread(renice_merge_threads, nice, done)
        except OSError:
            logger.warning("could not lower the priority of warehouse merges", exc_info=True)
            return
        await asyncio.sleep(RESCAN_SECONDS)
