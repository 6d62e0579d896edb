"""Ingest waits for the warehouse writers when they fall far behind.

On one machine the API and the writer share the CPU. With nothing to stop it, the
API took it: at full load it acknowledged 200k events/s while the writer made 150k/s
visible, so the lag, the writer's batches and their memory grew for as long as the
load lasted, and freshness was gone. On Kafka the same happens with the writers in
other processes: a paced load that the writers could not follow showed 2.7 s from
202 to visible at p99. So when this process's own appends are more than
`max_lag_events` ahead of what the writers have committed, a batch waits for them to
catch up before it is appended, for at most `max_wait_seconds`; then it is appended
anyway. A slow or absent warehouse therefore slows ingest down but never makes it
refuse data: absorbing that is what the log is for.

Only events this process appended count, by partition and log offset, so a backlog
from before a restart neither blocks ingest nor hides a new lag. With N API processes
the writers may be N x `max_lag_events` behind at most, each process holding back its
own share.

Where the writers stand: the embedded log's writer runs in this process and says so
(`WriterProgress.advance`); on Kafka, `follow_group` reads the warehouse group's
committed offsets, and only while this process has events the writers have not
committed, so an idle API process asks the broker nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable

from service.core import metrics
from service.log.interface import TELEMETRY_TOPIC, WAREHOUSE_GROUP, EventLog, LogUnavailable

logger = logging.getLogger(__name__)

# How often an API process on Kafka reads the writers' commits while it has events
# waiting for them; a writer commits every --writer-flush-seconds (0.5 s) at most.
GROUP_POLL_SECONDS = 0.2


class WriterProgress:
    """The writers' committed position in `crucible.telemetry`, per partition."""

    def __init__(self) -> None:
        self.committed: dict[int, int] = {}  # partition -> the next offset the writers will insert
        self._moved = asyncio.Event()

    def advance(self, topic: str, partition: int, next_offset: int) -> None:
        if topic == TELEMETRY_TOPIC and next_offset > self.committed.get(partition, 0):
            self.committed[partition] = next_offset
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
        # Per partition: (offset of a record this process appended, its events), oldest first;
        # dropped once the writers committed past it.
        self._appended: collections.defaultdict[int, collections.deque[tuple[int, int]]] = collections.defaultdict(
            collections.deque
        )
        self._lag = 0

    @property
    def lag_events(self) -> int:
        for partition, records in self._appended.items():
            committed = self._progress.committed.get(partition, 0)
            while records and records[0][0] < committed:
                self._lag -= records.popleft()[1]
        return self._lag

    def appended(self, positions: Iterable[tuple[int, int]], events: Iterable[int]) -> None:
        """Telemetry records this process appended: their (partition, offset) and events."""
        for (partition, offset), count in zip(positions, events, strict=True):
            self._appended[partition].append((offset, count))
            self._lag += count

    async def wait_for_room(self) -> None:
        if self.lag_events <= self._max_lag:
            return
        started = time.monotonic()
        deadline = started + self._max_wait
        while self.lag_events > self._max_lag and (remaining := deadline - time.monotonic()) > 0:
            await self._progress.wait_for_progress(remaining)
        metrics.INGEST_BACKPRESSURE_SECONDS.observe(time.monotonic() - started)


async def follow_group(
    log: EventLog, progress: WriterProgress, backpressure: Backpressure, interval: float = GROUP_POLL_SECONDS
) -> None:
    """Keep `progress` at the warehouse group's commits while this process has events
    they do not cover (Kafka: the writers are other processes). Runs until cancelled."""
    while True:
        await asyncio.sleep(interval)
        if backpressure.lag_events == 0:
            continue
        try:
            positions = await log.positions(TELEMETRY_TOPIC, WAREHOUSE_GROUP)
        except LogUnavailable as exc:  # the broker is away: ingest answers 503 meanwhile
            logger.debug("cannot read the writers' commits: %s", exc)
            continue
        for position in positions:
            if position.committed is not None:
                progress.advance(TELEMETRY_TOPIC, position.partition, position.committed)
