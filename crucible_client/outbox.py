"""The batches waiting for the server, oldest first: the spool's, then those in memory.

Batches only ever move from memory to the end of the spool, oldest first, so the
spool always holds older batches than memory and sending the spool first keeps order.
Senders claim the oldest unclaimed batch (`claim`) without removing it, and remove it
once the server has answered (`done`) or give it back to be tried again (`release`);
in between, the batcher may move it to the spool. Batches in memory may be in flight
two at a time (the server overlaps them); the spool is sent one batch at a time, in order.
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
    """Thread-safe: the batcher adds and spills, senders claim batches and answer them."""

    def __init__(self, spool: Spool, stats: ClientStats) -> None:
        self._spool = spool
        self._stats = stats
        self._origin = spool.name
        self._memory: deque[Batch] = deque()
        self.memory_events = 0
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self._claimed: set[str] = set()  # keys of batches in flight
        # This process's batches by seq, oldest first, until the server answers them
        # (possibly out of order): every seq up to `finished_seq` is answered.
        self._unanswered: deque[int] = deque()
        self._answered: set[int] = set()
        self.finished_seq = 0
        # Batches previous processes left (adopted from their spool) come before any of ours;
        # a flush waits for them too.
        self._older_pending = spool.adopted > 0
        # Keys of batches the server acknowledged while they were being spilled: their
        # spooled copy is skipped rather than sent again.
        self._acknowledged_in_spool: set[str] = set()
        self.work = threading.Event()  # set when a batch is added or given back
        self._closed = False

    @property
    def origin(self) -> str:
        return self._origin

    def add(self, batches: list[Batch]) -> None:
        if not batches:
            return
        with self._lock:
            self._memory.extend(batches)
            self._unanswered.extend(b.seq for b in batches)
            self.memory_events += sum(b.events for b in batches)
        self.work.set()

    def claim(self) -> Ticket | None:
        """The oldest batch nobody is sending, or None (also while a spooled batch is in flight)."""
        with self._lock:
            if self._closed:
                return None
            spooled = self._oldest_spooled()
            if self._older_pending and (spooled is None or spooled.origin == self._origin):
                self._older_pending = False
                self._finished.notify_all()
            ticket = self._next_ticket(spooled)
            if ticket is not None:
                self._claimed.add(ticket.batch.key)
            return ticket

    def _oldest_spooled(self) -> Batch | None:
        while (batch := self._spool.peek()) is not None and batch.key in self._acknowledged_in_spool:
            self._acknowledged_in_spool.discard(batch.key)
            self._spool.mark_sent(batch)
        return batch

    def _next_ticket(self, spooled: Batch | None) -> Ticket | None:
        if spooled is not None:
            # One at a time, to keep the spool's order; newer batches in memory wait.
            return None if spooled.key in self._claimed else Ticket(spooled, True)
        for batch in self._memory:
            if batch.key not in self._claimed:
                return Ticket(batch, False)
        return None

    def release(self, ticket: Ticket) -> None:
        """Give a batch back after a failed attempt: the next claim takes it again."""
        with self._lock:
            self._claimed.discard(ticket.batch.key)
        self.work.set()

    def done(self, ticket: Ticket) -> None:
        """The server answered the ticket's batch for good (stored or refused)."""
        batch = ticket.batch
        with self._lock:
            self._claimed.discard(batch.key)
            if self._closed:  # the spool is released: a later process may send it again, with its key
                pass
            elif ticket.spooled:
                self._spool.mark_sent(batch)
            elif not self._remove_from_memory(batch):  # spilled while in flight
                self._acknowledged_in_spool.add(batch.key)
            self._answer(batch)

    def _remove_from_memory(self, batch: Batch) -> bool:
        for index, candidate in enumerate(self._memory):
            if candidate is batch:
                del self._memory[index]
                self.memory_events -= batch.events
                return True
        return False

    def _answer(self, batch: Batch) -> None:
        if batch.origin != self._origin:
            return
        self._answered.add(batch.seq)
        unanswered = self._unanswered
        while unanswered and unanswered[0] in self._answered:
            self._answered.discard(unanswered[0])
            self.finished_seq = unanswered.popleft()
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
                self._stats.count(dropped=count)
                for batch in moving:
                    self._answer(batch)
            else:
                self._stats.count(spooled=count)
            for _ in moving:
                self._memory.popleft()
            self.memory_events = left

    def close(self) -> None:
        """Spill whatever is in memory and release the spool."""
        self.spill(0, drop_on_failure=True)
        with self._lock:
            self._closed = True
            self._spool.close()
