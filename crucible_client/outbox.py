"""The batches waiting for the server, oldest first: the spool's, then those in memory.

Batches only ever move from memory to the end of the spool, oldest first, so the
spool always holds older batches than memory and sending the spool first keeps order.
The sender takes the oldest batch without removing it (`head`), and removes it once
the server has answered (`done`); in between, the batcher may move it to the spool.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import NamedTuple

from crucible_client.spool import Spool
from crucible_client.stats import ClientStats
from crucible_client.wire import Batch

logger = logging.getLogger("crucible_client")


class Ticket(NamedTuple):
    batch: Batch
    spooled: bool


class Outbox:
    """Thread-safe: the batcher adds and spills, the sender takes heads and marks them done."""

    def __init__(self, spool: Spool, stats: ClientStats) -> None:
        self._spool = spool
        self._stats = stats
        self._origin = spool.name
        self._memory: deque[Batch] = deque()
        self.memory_events = 0
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self.finished_seq = 0  # every batch of this process up to this seq is answered
        self.last_seq = 0  # the seq of the newest batch added
        # Keys of batches the server acknowledged while they were being spilled: their
        # spooled copy is skipped rather than sent again.
        self._acknowledged_in_spool: set[str] = set()
        self.work = threading.Event()  # set when a batch is added
        # Batches previous processes left (adopted from their spool) come before any of ours;
        # a flush waits for them too.
        self._older_pending = spool.adopted > 0
        self._closed = False

    @property
    def origin(self) -> str:
        return self._origin

    def add(self, batches: list[Batch]) -> None:
        if not batches:
            return
        with self._lock:
            self._memory.extend(batches)
            self.memory_events += sum(b.events for b in batches)
            self.last_seq = batches[-1].seq
        self.work.set()

    def head(self) -> Ticket | None:
        """The oldest batch not yet answered, or None."""
        with self._lock:
            if self._closed:
                return None
            ticket = self._next_ticket()
            if self._older_pending and (ticket is None or ticket.batch.origin == self._origin):
                self._older_pending = False
                self._finished.notify_all()
            return ticket

    def _next_ticket(self) -> Ticket | None:
        while (batch := self._spool.peek()) is not None:
            if batch.key not in self._acknowledged_in_spool:
                return Ticket(batch, True)
            self._acknowledged_in_spool.discard(batch.key)
            self._spool.mark_sent(batch)
        if self._memory:
            return Ticket(self._memory[0], False)
        return None

    def done(self, ticket: Ticket) -> None:
        """The server answered the ticket's batch for good (stored or refused)."""
        batch = ticket.batch
        with self._lock:
            if self._closed:  # the spool is released: a later process may send it again, with its key
                pass
            elif ticket.spooled:
                self._spool.mark_sent(batch)
            elif self._memory and self._memory[0] is batch:
                self._memory.popleft()
                self.memory_events -= batch.events
            else:  # spilled while in flight
                self._acknowledged_in_spool.add(batch.key)
            self._finish(batch)

    def _finish(self, batch: Batch) -> None:
        if batch.origin == self._origin and batch.seq > self.finished_seq:
            self.finished_seq = batch.seq
            self._finished.notify_all()

    def wait_finished(self, seq: int, timeout: float | None) -> bool:
        """Wait until every batch up to `seq`, and those of previous processes, is answered;
        False on timeout."""
        with self._finished:
            return self._finished.wait_for(lambda: self.finished_seq >= seq and not self._older_pending, timeout)

    def spill(self, keep_events: int, drop_on_failure: bool) -> None:
        """Move the oldest batches in memory to the spool until at most `keep_events` are left.

        If the spool cannot take them (disk full) and `drop_on_failure` (memory is over
        its cap), they are dropped and counted rather than let memory grow.
        """
        with self._lock:
            if self._closed:
                return
            moving: list[Batch] = []
            left = self.memory_events
            for batch in self._memory:
                if left <= keep_events:
                    break
                moving.append(batch)
                left -= batch.events
            if not moving:
                return
            count = self.memory_events - left
            try:
                self._spool.append(moving)
            except OSError as exc:
                if not drop_on_failure:
                    logger.warning("cannot write to the spool, keeping %d events in memory: %s", count, exc)
                    return
                logger.error("cannot write to the spool, %d events dropped: %s", count, exc)
                self._stats.dropped += count
                for batch in moving:
                    self._finish(batch)
            else:
                self._stats.spooled += count
            for _ in moving:
                self._memory.popleft()
            self.memory_events = left

    def close(self) -> None:
        """Spill whatever is in memory and release the spool."""
        self.spill(0, drop_on_failure=True)
        with self._lock:
            self._closed = True
            self._spool.close()
