"""The batches waiting for the server, oldest first: those to read back from the spool, then those in memory.

With write-ahead (the default), every batch is written to the spool before it is queued
here, and the spool is told when the server has answered it, so a process that dies
leaves every unanswered batch on disk for the next one. Without it, batches only go to
the spool when moved out of memory (over the memory cap, or after `spill_after`).

Either way, batches leave memory oldest first, and only ever to the spool: everything
before `_disk_until` (the adopted batches and those moved out of memory) is read back
from the spool, everything after it is in memory, so sending the spool first keeps
order. Senders claim the oldest unclaimed batch (`claim`) without removing it, and
remove it once the server has answered (`done`) or give it back to be tried again
(`release`); in between, the batcher may move it out of memory. Batches in memory may
be in flight two at a time (the server overlaps them); the spool's are sent one at a
time, in order.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from crucible_client.segment import Location
from crucible_client.spool import Spool
from crucible_client.stats import ClientStats
from crucible_client.wire import Batch

logger = logging.getLogger("crucible_client")


@dataclass(eq=False, slots=True)
class Pending:
    batch: Batch
    location: Location | None  # in the spool, once written there


class Ticket(NamedTuple):
    pending: Pending
    spooled: bool  # read back from the spool, not in memory

    @property
    def batch(self) -> Batch:
        return self.pending.batch


class Outbox:
    """Thread-safe: the batcher adds and spills, senders claim batches and answer them."""

    def __init__(self, spool: Spool, stats: ClientStats, write_ahead: bool) -> None:
        self._spool = spool
        self._stats = stats
        self._origin = spool.name
        self.write_ahead = write_ahead
        self._memory: deque[Pending] = deque()
        self.memory_events = 0
        self._disk_until = spool.adopted_until
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
        self.work = threading.Event()  # set when a batch is added or given back
        self._closed = False

    @property
    def origin(self) -> str:
        return self._origin

    def add(self, batches: list[Batch]) -> bool:
        """Queue batches for the senders, written ahead to the spool first (with write-ahead);
        whether they were written. The write holds no lock: senders go on meanwhile."""
        if not batches:
            return False
        locations: list[Location] | list[None] = [None] * len(batches)
        if self.write_ahead and not self._unwritten_in_memory():
            try:
                locations = self._spool.append(batches)
            except OSError as exc:
                logger.error("cannot write to the spool, %d batches kept in memory only: %s", len(batches), exc)
            else:
                self._stats.count(spooled=sum(b.events for b in batches))
        with self._lock:
            self._memory.extend(Pending(b, at) for b, at in zip(batches, locations, strict=True))
            self._unanswered.extend(b.seq for b in batches)
            self.memory_events += sum(b.events for b in batches)
        self.work.set()
        return locations[0] is not None

    def _unwritten_in_memory(self) -> bool:
        """Whether the newest batch in memory could not be written ahead (a full disk, say).

        Written batches must precede unwritten ones in memory, as in the spool: until those
        are sent or spilled, new batches stay in memory only too. Only this (the batcher's)
        thread adds unwritten batches, so the answer cannot turn True behind its back."""
        with self._lock:
            return bool(self._memory) and self._memory[-1].location is None

    def claim(self) -> Ticket | None:
        """The oldest batch nobody is sending, or None (also while a spooled batch is in flight)."""
        with self._lock:
            if self._closed:
                return None
            spooled = self._spool.peek(self._disk_until)
            if self._older_pending and (spooled is None or spooled[0].origin == self._origin):
                self._older_pending = False
                self._finished.notify_all()
            ticket = self._next_ticket(spooled)
            if ticket is not None:
                self._claimed.add(ticket.batch.key)
            return ticket

    def _next_ticket(self, spooled: tuple[Batch, Location] | None) -> Ticket | None:
        if spooled is not None:
            # One at a time, to keep the spool's order; newer batches in memory wait. A batch
            # moved out of memory while in flight waits for the attempt under way.
            batch, location = spooled
            return None if batch.key in self._claimed else Ticket(Pending(batch, location), True)
        for pending in self._memory:
            if pending.batch.key not in self._claimed:
                return Ticket(pending, False)
        return None

    def release(self, ticket: Ticket) -> None:
        """Give a batch back after a failed attempt: the next claim takes it again."""
        with self._lock:
            self._claimed.discard(ticket.batch.key)
        self.work.set()

    def done(self, ticket: Ticket) -> None:
        """The server answered the ticket's batch for good (stored or refused)."""
        pending = ticket.pending
        with self._lock:
            self._claimed.discard(pending.batch.key)
            if not self._closed:  # once closed, the spool is released: a later process may send it again, with its key
                if not ticket.spooled:
                    self._remove_from_memory(pending)
                if pending.location is not None:  # also when it was spilled while in flight
                    self._spool.acknowledge(pending.location)
            self._answer(pending.batch)

    def _remove_from_memory(self, pending: Pending) -> None:
        for index, candidate in enumerate(self._memory):
            if candidate is pending:
                del self._memory[index]
                self.memory_events -= pending.batch.events
                return

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
        """Move the oldest batches out of memory until at most `keep_events` are left there:
        those written ahead are only forgotten (the spool has them); the others are written.

        If the spool cannot take them (disk full) and `drop_on_failure` (memory is over
        its cap), they are dropped and counted rather than let memory grow.
        """
        with self._lock:
            if self._closed:
                return
            moving: list[Pending] = []
            left = self.memory_events
            for pending in self._memory:
                if left <= keep_events:
                    break
                moving.append(pending)
                left -= pending.batch.events
            if not moving or not self._write(moving, drop_on_failure):
                return
            for pending in moving:
                self._memory.popleft()
                if pending.location is not None:
                    self._disk_until = max(self._disk_until, pending.location.next())
            self.memory_events = left

    def _write(self, moving: list[Pending], drop_on_failure: bool) -> bool:
        """Write those of `moving` not in the spool yet; False to keep them all in memory."""
        unwritten = [p for p in moving if p.location is None]
        if not unwritten:
            return True
        count = sum(p.batch.events for p in unwritten)
        try:
            locations = self._spool.append([p.batch for p in unwritten])
        except OSError as exc:
            if not drop_on_failure:
                logger.warning("cannot write to the spool, keeping %d events in memory: %s", count, exc)
                return False
            logger.error("cannot write to the spool, %d events dropped: %s", count, exc)
            self._stats.count(dropped=count)
            for pending in unwritten:
                self._answer(pending.batch)
            return True
        for pending, location in zip(unwritten, locations, strict=True):
            pending.location = location
        self._stats.count(spooled=count)
        return True

    def close(self) -> None:
        """Move whatever is in memory to the spool and release it."""
        self.spill(0, drop_on_failure=True)
        with self._lock:
            self._closed = True
            self._spool.close()
