"""Ingest waits for the warehouse writer when it falls far behind (embedded log, writer in-process).

On one machine the API and the writer share the CPU. With nothing to stop it, the
API took it: at full load it acknowledged 200k events/s while the writer made 150k/s
visible, so the lag, the writer's batches and their memory grew for as long as the
load lasted, and freshness was gone. So when this process's own appends are more
than `max_lag_events` ahead of what the writer has committed, a batch waits for the
writer to catch up before it is appended, for at most `max_wait_seconds`; then it
is appended anyway. A slow or absent warehouse therefore slows ingest down but never
makes it refuse data: absorbing that is what the log is for.

Only events this process appended count, by log offset, so a backlog from before a
restart neither blocks ingest nor hides a new lag.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from service.core import metrics
from service.log.interface import TELEMETRY_TOPIC


class WriterProgress:
    """The writer's committed position in `crucible.telemetry` (one partition: the embedded log)."""

    def __init__(self) -> None:
        self.committed = 0  # the next offset the writer will insert
        self._moved = asyncio.Event()

    def advance(self, topic: str, next_offset: int) -> None:
        if topic == TELEMETRY_TOPIC and next_offset > self.committed:
            self.committed = next_offset
            self._moved.set()
            self._moved = asyncio.Event()

    async def wait_for_progress(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._moved.wait(), timeout)


class Backpressure:
    """Appends wait while this process's events not yet in the warehouse exceed a limit."""

    def __init__(self, progress: WriterProgress, max_lag_events: int, max_wait_seconds: float) -> None:
        self._progress = progress
        self._max_lag = max_lag_events
        self._max_wait = max_wait_seconds
        # (last offset of an append, its events), oldest first; dropped once committed.
        self._appended: collections.deque[tuple[int, int]] = collections.deque()
        self._lag = 0

    @property
    def lag_events(self) -> int:
        committed = self._progress.committed
        while self._appended and self._appended[0][0] < committed:
            self._lag -= self._appended.popleft()[1]
        return self._lag

    def appended(self, last_offset: int, events: int) -> None:
        self._appended.append((last_offset, events))
        self._lag += events

    async def wait_for_room(self) -> None:
        if self.lag_events <= self._max_lag:
            return
        started = time.monotonic()
        deadline = started + self._max_wait
        while self.lag_events > self._max_lag and (remaining := deadline - time.monotonic()) > 0:
            await self._progress.wait_for_progress(remaining)
        metrics.INGEST_BACKPRESSURE_SECONDS.observe(time.monotonic() - started)
