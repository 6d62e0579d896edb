"""The run watch: fails runs whose worker fell silent and revives them when heard again, in one API process at a time.

Every API process runs one, and each joins the consumer group `crucible-run-watch` on
`crucible.resources`. That topic has one partition, so the group gives it to one member
at a time (on the embedded log, to the one process that owns the data dir): only that
member listens to `crucible.telemetry` (run_heartbeats.py) and, every
`--run-stale-check-seconds`, judges the runs (run_silence.py), appends its verdicts in
one append and waits until its own projector has folded them, so that the next round
judges a state that includes them. So each verdict is appended once.

A member evicted from the group without knowing it yet (frozen past its session) could
still append a verdict the new owner appends too; the fold makes the second a no-op: a
time-out applies only to a running run and must cite a silence that covers everything
the log knows of the run, a recovery only to a timed-out run and must cite telemetry
after that silence. So verdicts cannot fight either: the log's order decides, and the
next round judges the state that order made.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Collection

from schemas.resources import RunTimedOut
from service.core import metrics
from service.log.interface import (
    RESOURCES_TOPIC,
    RUN_WATCH_GROUP,
    TELEMETRY_TOPIC,
    EventLog,
    LogConsumer,
    LogReader,
    LogUnavailable,
    LogWentBack,
    TopicPartition,
)
from service.resources.commands import resource_record
from service.resources.projector import Projector, ProjectorStalled
from service.resources.run_heartbeats import RunHeartbeats
from service.resources.run_silence import Verdict, judge

logger = logging.getLogger(__name__)

READ_BATCH = 256  # telemetry records per read; a read that returns fewer has caught up with the log
READ_TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 1.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RunWatch:
    """See the module docstring. `run()` is the process's background task."""

    def __init__(self, log: EventLog, projector: Projector, default_seconds: int, check_seconds: float) -> None:
        self._log = log
        self._projector = projector
        self._default_seconds = default_seconds
        self._check_seconds = check_seconds
        self._leading = False  # set by the group's callbacks; the loop starts or stops listening to follow it
        self._heartbeats: RunHeartbeats | None = None
        self._listening: asyncio.Task[None] | None = None
        # The offset of the last verdicts appended, until this process has folded them: judging
        # before would find the same runs silent again and append the same verdicts twice.
        self._unfolded: int | None = None

    async def run(self) -> None:
        """Until cancelled: stay in the group and, while this process owns its partition, watch."""
        consumer = await self._join()
        try:
            while True:
                await self._poll(consumer)
                try:
                    await self._follow_leadership()
                except Exception:  # the log did not open the tail: the next round tries again
                    logger.exception("run watch: cannot listen to %s", TELEMETRY_TOPIC)
                if self._heartbeats is not None and self._projector.caught_up:
                    try:
                        await self._sweep(self._heartbeats)
                    except (LogUnavailable, ProjectorStalled) as exc:  # the next round tries again
                        logger.warning("run watch: verdicts not recorded this round: %s", exc)
        finally:
            self._leading = False
            await self._follow_leadership()
            await consumer.stop()

    # -- leadership: the consumer group -------------------------------------------------

    async def on_assigned(self, consumer: LogConsumer, partitions: set[TopicPartition]) -> None:
        if partitions:
            consumer.pause(list(partitions))  # the group is only for its ownership: read nothing through it
            self._leading = True

    async def on_revoked(self, consumer: LogConsumer, partitions: set[TopicPartition]) -> None:
        if partitions:
            self._leading = False

    async def _join(self) -> LogConsumer:
        while True:
            try:
                return await self._log.consumer(RUN_WATCH_GROUP, [RESOURCES_TOPIC], self)
            except Exception:  # the broker may be away at start-up: the API serves meanwhile
                logger.exception("run watch: cannot join %s; retrying", RUN_WATCH_GROUP)
                await asyncio.sleep(RETRY_SECONDS)

    async def _poll(self, consumer: LogConsumer) -> None:
        """Wait one round. A Kafka member that stops polling leaves its group, so the wait is a poll
        (of a paused partition: it returns nothing), topped up with a sleep if it returns early."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await consumer.getmany(timeout=self._check_seconds, max_records=1)
        except Exception as exc:  # the broker is away: the group's own recovery takes over
            logger.warning("run watch: polling %s failed: %r", RUN_WATCH_GROUP, exc)
        remaining = self._check_seconds - (loop.time() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def _follow_leadership(self) -> None:
        if self._leading and self._listening is None:
            reader = await self._log.tail(TELEMETRY_TOPIC)
            self._heartbeats = RunHeartbeats()
            self._listening = asyncio.create_task(self._listen(reader, self._heartbeats), name="run-watch-listen")
            metrics.RUN_WATCHING.set(1)
            logger.info("this process watches runs for silence")
        elif not self._leading and self._listening is not None:
            self._listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listening
            self._listening = self._heartbeats = None
            metrics.RUN_WATCHING.set(0)
            logger.info("this process no longer watches runs")

    # -- listening and judging ----------------------------------------------------------

    async def _listen(self, reader: LogReader, heartbeats: RunHeartbeats) -> None:
        try:
            while True:
                asked_at = _now()
                try:
                    records = await reader.read(timeout=READ_TIMEOUT_SECONDS, max_records=READ_BATCH)
                except LogWentBack as exc:  # the topic was made anew: what was heard still holds
                    logger.warning("run watch: %s went back (%s); listening from its end", TELEMETRY_TOPIC, exc)
                    await reader.stop()
                    reader = await self._log.tail(TELEMETRY_TOPIC)
                    continue
                except Exception:
                    logger.exception("run watch: reading %s failed; retrying", TELEMETRY_TOPIC)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                for record in records:
                    heartbeats.hear(record)
                if len(records) < READ_BATCH:  # it caught up: everything appended before the read is heard
                    heartbeats.read_up_to(asked_at)
        finally:
            await reader.stop()

    async def _sweep(self, heartbeats: RunHeartbeats) -> None:
        if heartbeats.until is None:  # nothing read yet: no silence can be told
            return
        if self._unfolded is not None:
            if self._projector.state.position <= self._unfolded:
                return
            self._unfolded = None
        heartbeats.close_round()
        until = heartbeats.until
        state = self._projector.state
        verdicts = judge(state, heartbeats.heard, heartbeats.began, until, self._default_seconds, _now())
        heartbeats.watch(verdicts.watched, since=until)
        if verdicts.events:
            await self._record(verdicts.events)

    async def _record(self, verdicts: Collection[Verdict]) -> None:
        positions = await self._log.append([resource_record(verdict) for verdict in verdicts])
        self._unfolded = max(offset for _, offset in positions)
        await self._projector.applied(self._unfolded)
        timed_out = sum(isinstance(verdict, RunTimedOut) for verdict in verdicts)
        metrics.RUN_VERDICTS.labels("timed_out").inc(timed_out)
        metrics.RUN_VERDICTS.labels("recovered").inc(len(verdicts) - timed_out)
        logger.info("run watch: %d runs timed out, %d heard again", timed_out, len(verdicts) - timed_out)
