"""The threads that send the outbox's batches, oldest first, until the server answers for good."""

from __future__ import annotations

import logging
import threading
import time

from crucible_client.outbox import Outbox, Ticket
from crucible_client.stats import ClientStats
from crucible_client.transport import Outcome, Transport, backoff_seconds, ingest_result
from crucible_client.wire import event_names

logger = logging.getLogger("crucible_client")

BACKOFF_BASE_SECONDS = 0.1
IDLE_WAIT_SECONDS = 1.0
REFUSED_EVENTS_LOGGED = 5  # per batch: the rest are counted, not listed


class Reachability:
    """Whether the server answers, as the senders together see it: failing since the first
    failed attempt after the last answer (writes from several threads: a race only shifts
    the time by one attempt)."""

    def __init__(self) -> None:
        self.failing_since: float | None = None  # monotonic

    def failed(self, outcome: Outcome) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            logger.warning("cannot deliver telemetry, retrying with backoff: %s", outcome.reason)

    def answered(self) -> None:
        failing_since = self.failing_since
        if failing_since is not None:
            self.failing_since = None
            logger.info("the server answers again after %.1f s", time.monotonic() - failing_since)


class Sender(threading.Thread):
    """One batch at a time: a retried batch goes again with the same Idempotency-Key.

    Several senders may share an outbox, each with its own connection and backoff.
    """

    def __init__(
        self,
        outbox: Outbox,
        transport: Transport,
        stats: ClientStats,
        reachability: Reachability,
        max_backoff: float,
        name: str,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._outbox = outbox
        self._transport = transport
        self._stats = stats
        self._max_backoff = max_backoff
        self._halt = threading.Event()
        self._reachability = reachability

    def stop(self) -> None:
        self._halt.set()
        self._outbox.work.set()

    def run(self) -> None:
        attempt = 0
        while not self._halt.is_set():
            self._outbox.work.clear()
            ticket = self._outbox.claim()
            if ticket is None:
                self._outbox.work.wait(IDLE_WAIT_SECONDS)
                continue
            outcome = self._transport.send_batch(ticket.batch)
            if outcome.kind == "retry":
                attempt += 1
                self._stats.count(retries=1)
                self._reachability.failed(outcome)
                delay = backoff_seconds(attempt, BACKOFF_BASE_SECONDS, self._max_backoff)
                if outcome.retry_after is not None:
                    delay = max(delay, outcome.retry_after)
                self._halt.wait(delay)
                self._outbox.release(ticket)
                continue
            self._reachability.answered()
            attempt = 0
            if outcome.kind == "accepted":
                self._accepted(ticket, outcome)
            else:
                self._rejected(ticket, outcome)
            self._outbox.done(ticket)

    def _accepted(self, ticket: Ticket, outcome: Outcome) -> None:
        answer = ingest_result(outcome.body)
        if answer is None:  # a 2xx of another shape: a proxy, most likely; the events are not known stored
            logger.warning("unexpected answer to a telemetry batch (%s): %r", outcome.status, outcome.body[:200])
            self._stats.count(accepted=ticket.batch.events)
            return
        result = answer.data
        self._stats.count(accepted=result.accepted, rejected=result.rejected)
        if result.errors:
            names = event_names(ticket.batch.body)
            listed = "; ".join(
                f"#{e.index} {names[e.index] if e.index < len(names) else '?'}: {e.message} at {e.path}"
                for e in result.errors[:REFUSED_EVENTS_LOGGED]
            )
            logger.error("the server refused %d of %d events: %s", result.rejected, ticket.batch.events, listed)

    def _rejected(self, ticket: Ticket, outcome: Outcome) -> None:
        self._stats.count(rejected=ticket.batch.events, rejected_batches=1)
        logger.error(
            "the server refused a batch of %d events (%s, not retried): %s",
            ticket.batch.events,
            outcome.status,
            outcome.detail,
        )
