"""The thread that turns queued events into batches, by size or by time, and spills them.

The training loop's calls only append to a deque; this thread takes full batches as
soon as there are enough events (the caller wakes it) and whatever is left every
`flush_interval`, and hands them to the outbox, which writes them ahead to the spool.
So a process killed at any instant loses at most what is still queued: the events of
the last `flush_interval` (or of the last batch, when they come faster).

It never waits for the network, so it keeps memory bounded even while the senders are
stuck: over the cap, the oldest batches leave memory for the spool; without
write-ahead, they also go once the server has failed for `spill_after` seconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from crucible_client.outbox import Outbox
from crucible_client.sender import Reachability
from crucible_client.stats import ClientStats
from crucible_client.wire import Batch, Clock, Queued, encode_batches, to_events


class Flush:
    """A caller waiting for everything it logged before to be answered by the server."""

    def __init__(self) -> None:
        self.ready = threading.Event()  # set once `seq` is known
        self.seq = 0  # the last batch holding the caller's events


class Announcement(NamedTuple):
    """An event encoded ahead, under a key of its own that a later process can send it
    with again (a checkpoint's); `spooled` runs once it is written to the spool."""

    key: str
    body: bytes
    spooled: Callable[[], None]


@dataclass(frozen=True, slots=True)
class BatchingSettings:
    batch_events: int
    flush_interval: float
    max_memory_events: int
    spill_after: float
    max_batch_bytes: int


class Batcher(threading.Thread):
    def __init__(
        self,
        queue: deque[Queued],
        announcements: deque[Announcement],
        flushes: deque[Flush],
        wake: threading.Event,
        outbox: Outbox,
        stats: ClientStats,
        settings: BatchingSettings,
        reachability: Reachability,
    ) -> None:
        super().__init__(name="crucible-batcher", daemon=True)
        self._queue = queue
        self._announcements = announcements
        self._flushes = flushes
        self._wake = wake
        self._outbox = outbox
        self._stats = stats
        self._settings = settings
        self._reachability = reachability
        self._halt = threading.Event()
        self._next_seq = 1
        self._clock = Clock()  # the one thread that stamps events, so their order holds

    def stop(self) -> None:
        """Batch what is queued, then end."""
        self._halt.set()
        self._wake.set()

    def run(self) -> None:
        interval = self._settings.flush_interval
        last_drained = time.monotonic()
        while True:
            stopping = self._halt.is_set()
            if not stopping:
                self._wake.wait(max(interval - (time.monotonic() - last_drained), 0.001))
            self._wake.clear()
            now = time.monotonic()
            flushes = [self._flushes.popleft() for _ in range(len(self._flushes))]
            everything = stopping or bool(flushes) or now - last_drained >= interval
            self._make_batches(everything)
            self._add_announcements()
            if everything:
                last_drained = now
            for flush in flushes:
                flush.seq = self._next_seq - 1
                flush.ready.set()
            self._spill()
            if stopping:
                return

    def _make_batches(self, everything: bool) -> None:
        """Full batches from the queue; with `everything`, the rest too."""
        queue, size = self._queue, self._settings.batch_events
        queued = len(queue)
        left = queued if everything else queued - queued % size
        while left > 0:
            take = min(left, size)
            left -= take
            items = [queue.popleft() for _ in range(take)]
            events = to_events(items, self._clock)
            batches = encode_batches(events, self._settings.max_batch_bytes, self._next_seq, self._outbox.origin)
            self._next_seq += len(batches)
            self._stats.count(batched=take, dropped=take - sum(b.events for b in batches))
            self._outbox.add(batches)
            self._spill()  # while a long backlog is batched, too

    def _add_announcements(self) -> None:
        while self._announcements:
            announcement = self._announcements.popleft()
            batch = Batch(
                key=announcement.key, seq=self._next_seq, events=1, body=announcement.body, origin=self._outbox.origin
            )
            self._next_seq += 1
            self._stats.count(batched=1)
            if self._outbox.add([batch]):
                announcement.spooled()

    def _spill(self) -> None:
        in_memory = self._outbox.memory_events
        cap = self._settings.max_memory_events
        if in_memory > cap:
            self._outbox.spill(cap, drop_on_failure=True)
            return
        if self._outbox.write_ahead:
            return  # the spool has every batch already: nothing to gain from emptying memory
        failing_since = self._reachability.failing_since
        if in_memory and failing_since is not None and time.monotonic() - failing_since > self._settings.spill_after:
            self._outbox.spill(0, drop_on_failure=False)  # safe from a crash of this process
