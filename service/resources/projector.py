"""The projector: folds `crucible.resources` into memory and tells commands when their event applied.

Every API process runs one. At start-up it replays the topic from offset 0, then
tails it; a change made through any process reaches every other one this way.
A command appends its event, then awaits `applied(offset)` so it answers with
the state that includes its own change (read-your-writes). Listeners (the live
hub) are told of each event the fold accepted, right after it changed the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from schemas.resources import AnyResourceEvent
from service.core import metrics
from service.core.keyed_locks import KeyedLocks
from service.log.interface import RESOURCES_TOPIC, EventLog, LogReader, LogWentBack, StoredRecord
from service.resources.fold import Rejection, Resources, event_decoder

logger = logging.getLogger(__name__)

READ_BATCH = 10_000
PROGRESS_EVERY_SECONDS = 2.0
# Outcomes kept for commands that look after the projector already applied their offset.
RECENT_OUTCOMES = 100_000

ResourceListener = Callable[[AnyResourceEvent], None]


class ProjectorStalled(Exception):
    """The projector did not reach an offset in time (the log stopped answering)."""


class Projector:
    def __init__(self, log: EventLog, idempotency_ttl_seconds: int = 86_400) -> None:
        self._log = log
        self.state = Resources(idempotency_ttl=dt.timedelta(seconds=idempotency_ttl_seconds))
        self._reader: LogReader | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._outcomes: OrderedDict[int, Rejection | None] = OrderedDict()
        self._listeners: list[ResourceListener] = []
        self.caught_up = False
        # Commands of one Idempotency-Key run one at a time in this process, so a
        # command's work (a statistical test, an upload's check) is done once.
        self.requests_in_flight = KeyedLocks()

    def listen(self, listener: ResourceListener) -> None:
        """Call `listener(event)` after each event the fold applies (not those it refuses)."""
        self._listeners.append(listener)

    def unlisten(self, listener: ResourceListener) -> None:
        self._listeners.remove(listener)

    async def start(self) -> None:
        """Replay the whole topic, then tail it in the background."""
        self._reader = await self._log.reader(RESOURCES_TOPIC)
        await self._replay(self._reader)
        self._task = asyncio.create_task(self._tail(self._reader), name="resources-projector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._reader is not None:
            await self._reader.stop()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.cancel()

    async def applied(self, offset: int, timeout: float = 10.0) -> Rejection | None:
        """Wait until the event at `offset` is folded; return why it was refused, if it was."""
        if offset >= self.state.position:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(offset, []).append(waiter)
            done, _ = await asyncio.wait({waiter}, timeout=timeout)  # see SqliteLog.wait_for_append
            if not done:
                raise ProjectorStalled(f"resource event {offset} not applied after {timeout} s")
        return self._outcomes.get(offset)

    async def _replay(self, reader: LogReader) -> None:
        started = time.monotonic()
        end = await reader.end_offset()
        last_report = started
        while end is None or self.state.position < end:
            records = await reader.read(timeout=1.0, max_records=READ_BATCH)
            if not records:
                break
            self._fold(records)
            if time.monotonic() - last_report > PROGRESS_EVERY_SECONDS:
                last_report = time.monotonic()
                logger.info("replaying %s: %d of %s events", RESOURCES_TOPIC, self.state.position, end or "?")
        self.caught_up = True
        logger.info("replayed %d resource events in %.1f s", self.state.position, time.monotonic() - started)

    async def _tail(self, reader: LogReader) -> None:
        while True:
            try:
                records = await reader.read(timeout=1.0, max_records=READ_BATCH)
            except LogWentBack as exc:
                # Folding a new log's events onto the old state would make it wrong: stop
                # folding, and say so in /readyz, until the process starts again.
                self.caught_up = False
                logger.error("%s lost events this process has folded (%s); no longer folding", RESOURCES_TOPIC, exc)
                await asyncio.sleep(1.0)
                continue
            except Exception:
                logger.exception("reading %s failed; retrying", RESOURCES_TOPIC)
                await asyncio.sleep(1.0)
                continue
            self._fold(records)

    def _fold(self, records: list[StoredRecord]) -> None:
        for record in records:
            try:
                event = event_decoder.decode(record.value)
            except msgspec.DecodeError as exc:
                # Written by a newer version, or damaged: skip it rather than stop every process.
                logger.warning("skipping resource event %d: %s", record.offset, exc)
                rejection: Rejection | None = Rejection("invalid", str(exc))
                self.state.position = record.offset + 1
            else:
                try:
                    rejection = self.state.apply(event, record.offset)
                except Exception as exc:
                    # A bug in the fold must not stop it for every later event (and every
                    # command waiting on one): this event is skipped, loudly.
                    logger.exception(
                        "applying resource event %d (%s) failed; skipped", record.offset, type(event).__name__
                    )
                    rejection = Rejection("invalid", f"the fold failed on this event: {exc!r}")
                    self.state.position = record.offset + 1
                if rejection is None:
                    self._tell_listeners(event)
            self._outcomes[record.offset] = rejection
            if len(self._outcomes) > RECENT_OUTCOMES:
                self._outcomes.popitem(last=False)
        # Kafka offsets may have gaps: wake every waiter the position has passed.
        for offset in [o for o in self._waiters if o < self.state.position]:
            for waiter in self._waiters.pop(offset):
                if not waiter.done():
                    waiter.set_result(None)
        metrics.RESOURCES_POSITION.set(self.state.position)

    def _tell_listeners(self, event: AnyResourceEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                # A listener's bug must not stop the fold every command waits on.
                logger.exception("resource listener %r failed on %s", listener, type(event).__name__)
