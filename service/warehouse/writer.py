"""The warehouse writer: log records of `crucible.telemetry` into ClickHouse, exactly once.

A pipeline of small steps, as in Sentry's Arroyo:

1. fetch records and gather them per partition, until a batch has enough rows or
   its oldest record has waited `writer_flush_seconds`;
2. queue the batch; when the queue is full the partitions are paused (backpressure:
   the warehouse sets the pace, nothing sleeps and hopes);
3. insert the batch with the deduplication token `topic:partition:first-last`, and
   only then commit `last + 1`.

Records of format v2 (`TelemetryRecord`) go into `telemetry_records`, whose
materialized view writes their events into `telemetry_events`: the writer only puts
each record's log position in front of it. Records of format v1 (JSON lines, written
before v2) still go straight into `telemetry_events` with the position stamped on
every line; a batch never mixes the two.

A batch sent again with the same Idempotency-Key to another API process (or to one
restarted before it answered) is in the log twice; the writer drops every copy after
the first by its batch-id header, per record, before it is batched
(service/warehouse/retry_window.py). A batch's token and commit cover the records it dropped too.

A crash between 3's insert and its commit re-reads the same records. Two things keep
them from being stored twice: on taking a partition the writer asks the warehouse
for the highest log offset it already holds and starts after it, and ClickHouse
drops an insert whose token it has seen. A warehouse that is down is retried with
backoff, forever, and the retry first leaves out the records it holds already (a server
killed mid-insert may keep a part without its token); a record the warehouse refuses
while it is up goes to the dead-letter topic with the reason, so one bad record never
stops the pipeline. A log that does not hold what the warehouse stored from it (a topic
made anew) stops the writer: see `_log_differs_from_warehouse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from schemas.telemetry import RECORD_BATCH_HEADER, RECORD_CONTENT_TYPE, RECORD_EVENTS_HEADER
from service.core import metrics
from service.log.interface import (
    TELEMETRY_DLQ_TOPIC,
    TELEMETRY_TOPIC,
    WAREHOUSE_GROUP,
    EventLog,
    LogConsumer,
    LogUnavailable,
    LogWentBack,
    Record,
    StoredRecord,
    TopicPartition,
)
from service.log.offset_gaps import HOLE_WAIT_SECONDS
from service.settings import Settings
from service.warehouse.backpressure import WriterProgress
from service.warehouse.client import Warehouse, WarehouseError
from service.warehouse.retry_window import RetryWindow

logger = logging.getLogger(__name__)

TABLE = "telemetry_records"
LEGACY_TABLE = "telemetry_events"
MAX_BACKOFF_SECONDS = 30.0
LAG_REFRESH_SECONDS = 2.0
COMMIT_TIMEOUT_SECONDS = 30.0
# Longer than a hole in the offsets is waited for, so that a record missing at the offset
# asked for is seen as such.
RECORD_READ_SECONDS = HOLE_WAIT_SECONDS + 3.0
# Test hook: exit the process right after the first insert, before its commit, to
# prove a crash there stores nothing twice.
CRASH_AFTER_INSERT_ENV = "CRUCIBLE_TEST_CRASH_AFTER_INSERT"


@dataclass(slots=True)
class Batch:
    """Consecutive records of one partition, inserted as one block."""

    partition: TopicPartition
    records: list[StoredRecord] = field(default_factory=list)
    rows: int = 0
    started: float = field(default_factory=time.monotonic)
    legacy: bool = False  # format v1 records (see the module docstring)
    # The offsets read into the batch, retries it dropped included: its token and its
    # commit cover them all, so a dropped record is never read again after the commit.
    first: int = -1
    last: int = -1
    # Records found stored whole after an insert whose outcome was unknown, and left out:
    # the rest is another block, so it gets a token of its own.
    found_stored: int = 0

    def __post_init__(self) -> None:
        if self.records and self.first < 0:  # made with its records at once
            self.first, self.last = self.records[0].offset, self.records[-1].offset

    def add(self, record: StoredRecord, rows: int) -> None:
        """Take a record to insert."""
        self.skip(record)
        self.records.append(record)
        self.rows += rows

    def skip(self, record: StoredRecord) -> None:
        """Read a record past without inserting it (a retry stored already)."""
        if self.first < 0:
            self.first = record.offset
        self.last = record.offset

    def token(self) -> str:
        token = f"{self.partition.topic}:{self.partition.partition}:{self.first}-{self.last}"
        return f"{token}:less-{self.found_stored}" if self.found_stored else token

    def keep_only(self, records: list[StoredRecord]) -> None:
        """Leave out the records not in `records` (stored already); the range and its commit stay."""
        self.found_stored += len(self.records) - len(records)
        self.records = records
        self.rows = sum(record_shape(record)[1] for record in records)

    def table(self) -> str:
        return LEGACY_TABLE if self.legacy else TABLE

    def body(self) -> Iterator[bytes]:
        return rows_of(self.records) if self.legacy else records_of(self.records)


def record_shape(record: StoredRecord) -> tuple[bool, int]:
    """(format v1?, events) of a record, from its headers (v1 records carry one event per line)."""
    content_type = events = None
    for name, value in record.headers:
        if name == "content-type":
            content_type = value
        elif name == RECORD_EVENTS_HEADER:
            events = value
    if content_type == RECORD_CONTENT_TYPE and events is not None:
        return False, int(events)
    return True, record.value.count(b"\n")


def retry_batch_id(record: StoredRecord) -> bytes | None:
    """The batch id of a record whose batch came with an Idempotency-Key, else None."""
    for name, value in record.headers:
        if name == RECORD_BATCH_HEADER:
            return value
    return None


def records_of(records: list[StoredRecord]) -> Iterator[bytes]:
    """Format v2 records as JSONEachRow rows of `telemetry_records`: each one's position put in front.

    A v2 value is one compact JSON object, so the position fields go after its `{`.
    Records of batches sent with an Idempotency-Key are marked `idempotent`, with their
    log timestamp, which makes the warehouse remember them in `telemetry_batches`
    (migration 0013).
    One row at a time, so that a 100,000-event batch is never also held as one
    30 MB body (the embedded warehouse streams the rows to the file it reads).
    """
    for record in records:
        position = b'{"log_partition":%d,"log_offset":%d,' % (record.partition, record.offset)
        if retry_batch_id(record) is not None:
            position += b'"idempotent":true,"log_timestamp_ms":%d,' % record.timestamp_ms
        yield b"".join((position, memoryview(record.value)[1:], b"\n"))


def rows_of(records: list[StoredRecord]) -> Iterator[bytes]:
    """Format v1 records' JSON lines, each row stamped with its log position.

    Every row is a compact JSON object ending in `}` and a newline (JSON escapes
    newlines inside strings), so the position is spliced in before that brace.
    """
    for record in records:
        position = b',"log_partition":%d,"log_offset":%d}\n' % (record.partition, record.offset)
        value = record.value if record.value.endswith(b"\n") else record.value + b"\n"
        yield value.replace(b"}\n", position)


class LogReplaced(RuntimeError):
    """The log does not hold what the warehouse stored from it: the topic was made anew (a
    broker that kept nothing, a topic deleted and created again). Its new records reuse
    offsets the warehouse has stored, so neither the resume position nor the deduplication
    tokens mean anything for them: the writer stops rather than skip them."""


class _WarehouseDown(WarehouseError):
    """The warehouse stopped answering in the middle of a batch."""


class _Resume(msgspec.Struct):
    next_offset: int
    rows: int


class _StoredRecord(msgspec.Struct):
    offset: int
    events: int


class _StoredBatch(msgspec.Struct):
    offset: int
    batch_id: str


class _RecordBatch(msgspec.Struct):
    """The batch id of a record's value: a v2 record's own, a v1 record's first row's."""

    batch_id: str = ""


class _Stored(msgspec.Struct):
    batch_id: str
    experiment_id: str
    appended_ms: int


_resume_decoder = msgspec.json.Decoder(_Resume)
_stored_decoder = msgspec.json.Decoder(_Stored)
_stored_record_decoder = msgspec.json.Decoder(_StoredRecord)
_stored_batch_decoder = msgspec.json.Decoder(_StoredBatch)
_record_batch_decoder = msgspec.json.Decoder(_RecordBatch)


def _batch_id_of(record: StoredRecord) -> str:
    try:
        return _record_batch_decoder.decode(record.value.split(b"\n", 1)[0]).batch_id
    except msgspec.DecodeError:
        return ""


class WarehouseWriter:
    """Runs the pipeline above until stopped; one per `crucible writer` or `serve` process."""

    def __init__(
        self, log: EventLog, warehouse: Warehouse, settings: Settings, progress: WriterProgress | None = None
    ) -> None:
        self._log = log
        self._progress = progress or WriterProgress()
        self._warehouse = warehouse
        self._batch_rows = settings.writer_batch_rows
        self._flush_seconds = settings.writer_flush_seconds
        self._retry_ttl = settings.idempotency_ttl_seconds
        self._retry_window_pairs = settings.writer_retry_window
        self._windows: dict[TopicPartition, RetryWindow] = {}
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=settings.writer_queue_batches)
        self._pending: dict[TopicPartition, Batch] = {}
        # Partitions whose start position `on_assigned` has set; see there why records
        # of other partitions are dropped by the fetch loop.
        self._started: set[TopicPartition] = set()
        # Bumped by every revocation. Records fetched before one are stale even when the
        # rebalance gives their partition back to this writer: it starts the partition
        # again from the warehouse's position, so the rest of an old fetch must not be added.
        self._generation = 0
        self._consumer: LogConsumer | None = None
        # Set by on_assigned, raised by the fetch loop: aiokafka logs and swallows what a
        # rebalance callback raises.
        self._stopped_by: LogReplaced | None = None
        self._crash_after_insert = os.environ.get(CRASH_AFTER_INSERT_ENV) == "1"
        self.healthy = True
        self.running = False
        # Set once the group has given this writer its partitions (none is an answer too):
        # until then it inserts nothing, so the process is not ready.
        self.joined = False
        self.committed_records = 0
        self.retries_dropped = 0

    async def run(self) -> None:
        """Consume until cancelled; inserts in flight finish first."""
        self.running = True
        try:
            await self._run()
        finally:
            self.running = self.joined = False

    async def _run(self) -> None:
        self._consumer = await self._log.consumer(WAREHOUSE_GROUP, [TELEMETRY_TOPIC], listener=self)
        inserter = asyncio.create_task(self._insert_loop(), name="writer-insert")
        lag = asyncio.create_task(self._lag_loop(), name="writer-lag")
        try:
            fetcher = asyncio.create_task(self._fetch_loop(), name="writer-fetch")
            # Whichever step fails first stops the writer, loudly, rather than leaving half a pipeline.
            done, _ = await asyncio.wait({fetcher, inserter}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher
            lag.cancel()
            inserter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await inserter
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            # Leaving the group revokes the partitions, and on_revoked waits for the queue:
            # nothing will insert what is left in it now.
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()
            await self._consumer.stop()

    # -- partition ownership -------------------------------------------------------------

    async def on_assigned(self, consumer: LogConsumer, partitions: set[TopicPartition]) -> None:
        """Start each partition after what the warehouse already holds of it, knowing the
        retryable records it holds (service/warehouse/retry_window.py).

        aiokafka assigns the partitions, and starts fetching them, before it awaits this
        callback. Dropping their pending batches here without a seek lost those records
        (the position was already past them, and the next commit skipped them for good).
        So the fetch loop ignores a partition until it is in `_started`, and each one is
        seeked to its start (aiokafka then discards what it fetched before) in the same
        step that adds it, with no await in between.
        """
        starts: dict[TopicPartition, int] = {}
        windows: dict[TopicPartition, RetryWindow] = {}
        commits: dict[TopicPartition, int] = {}
        for tp in partitions:
            commits[tp] = await consumer.committed(tp) or 0
            starts[tp] = await self._warehouse_next_offset(tp, commits[tp])
        for tp in partitions:
            differs = await self._log_differs_from_warehouse(tp, starts[tp])
            if differs is not None:
                self._stopped_by = LogReplaced(
                    f"{differs}: {tp.topic} was created anew. Its new records would be taken for stored "
                    "ones; the writer stops (see deploy/README.md, 'When a process dies')."
                )
                logger.error("%s", self._stopped_by)
                return
            if starts[tp] > commits[tp]:
                logger.info(
                    "%s: warehouse holds up to %d, committed %d; resuming there", tp, starts[tp] - 1, commits[tp]
                )
                await consumer.commit({tp: starts[tp]})
            # Whoever held the partition before may have stored a batch whose retry is
            # still ahead in the log: the warehouse, not this process, knows.
            windows[tp] = await self._stored_retry_window(tp)
        for tp, start in starts.items():
            self._pending.pop(tp, None)
            self._windows[tp] = windows[tp]
            consumer.seek(tp, start)
            self._started.add(tp)
            self._progress.advance(tp.topic, tp.partition, start)
        self.joined = True

    async def on_revoked(self, consumer: LogConsumer, partitions: set[TopicPartition]) -> None:
        """Insert and commit what was read of partitions another member is taking over."""
        # Records fetched from now on are the next owner's (it starts at our last commit).
        self._started.difference_update(partitions)
        self._generation += 1
        for tp in partitions:
            batch = self._pending.pop(tp, None)
            if batch is not None:
                await self._queue.put(batch)
        await self._queue.join()
        for tp in partitions:  # the next owner rebuilds it from the warehouse
            self._windows.pop(tp, None)

    def _require_consumer(self) -> LogConsumer:
        if self._consumer is None:
            raise RuntimeError("the writer has not joined its group yet")
        return self._consumer

    async def _log_differs_from_warehouse(self, tp: TopicPartition, before: int) -> str | None:
        """How the log differs from what the warehouse stored of it, or None when it agrees
        (or cannot be asked now): the last record the warehouse holds below `before` must be
        in the log at its offset with its batch id (queries/writer_stored_batch.sql)."""
        try:
            body = await self._warehouse.query("writer_stored_batch", {"partition": tp.partition, "before": before})
        except WarehouseError:
            return None
        if not body.strip():
            return None
        stored = _stored_batch_decoder.decode(body.splitlines()[0])
        try:
            positions = await self._log.positions(TELEMETRY_TOPIC, WAREHOUSE_GROUP)
            position = next((p for p in positions if p.partition == tp.partition), None)
            if position is not None and position.start is not None and stored.offset < position.start:
                return None  # retention has taken the record (a writer away longer than it): nothing to compare
            reader = await self._log.reader(tp.topic, stored.offset, tp.partition)
            try:  # a hole at the offset is waited out (service/log/offset_gaps.py), then passed
                deadline = time.monotonic() + RECORD_READ_SECONDS
                records: list[StoredRecord] = []
                while not records and time.monotonic() < deadline:
                    records = await reader.read(timeout=max(deadline - time.monotonic(), 0.1), max_records=1)
            finally:
                await reader.stop()
        except (LogUnavailable, LogWentBack):
            return None
        if not records:
            # A log gives a record it holds within milliseconds; one that does not give it in
            # seconds (tansu made anew answered so) does not hold it. Its end is only told:
            # tansu started again on its storage reports ends below records it serves.
            end = position.end if position is not None else None
            return (
                f"partition {tp.partition} gives no record at offset {stored.offset} (its end: {end}), "
                f"but the warehouse holds that offset"
            )
        found = _batch_id_of(records[0])
        if records[0].offset != stored.offset or found != stored.batch_id:
            return (
                f"partition {tp.partition}'s record at offset {stored.offset} is of batch {found!r} in the log "
                f"and of batch {stored.batch_id!r} in the warehouse"
            )
        return None

    async def _warehouse_next_offset(self, tp: TopicPartition, committed: int) -> int:
        while True:
            try:
                body = await self._warehouse.query(
                    "writer_resume_offset", {"partition": tp.partition, "committed": committed}
                )
                resume = _resume_decoder.decode(body.splitlines()[0])
                return resume.next_offset if resume.rows else committed
            except WarehouseError as exc:
                logger.warning("warehouse unreachable while resuming %s: %s", tp, exc)
                await asyncio.sleep(1.0)

    async def _stored_retry_window(self, tp: TopicPartition) -> RetryWindow:
        window = RetryWindow(self._retry_ttl, self._retry_window_pairs)
        while True:
            try:
                body = await self._warehouse.query(
                    "writer_retry_window", {"partition": tp.partition, "limit": self._retry_window_pairs}
                )
                break
            except WarehouseError as exc:
                logger.warning("warehouse unreachable while reading %s's stored retries: %s", tp, exc)
                await asyncio.sleep(1.0)
        for line in reversed(body.splitlines()):  # oldest first, as they were read from the log
            stored = _stored_decoder.decode(line)
            window.first_time(stored.batch_id.encode(), stored.experiment_id.encode(), stored.appended_ms)
        return window

    # -- the pipeline --------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        consumer = self._require_consumer()
        while True:
            if self._stopped_by is not None:
                raise self._stopped_by
            fetched = await consumer.getmany(timeout=self._flush_seconds / 2, max_records=256)
            generation = self._generation
            for tp, records in fetched.items():
                for record in records:
                    # Checked per record: queueing a full batch may wait, and a rebalance may
                    # take the partition meanwhile. Its records are then the next owner's,
                    # or this writer's again, read anew from where on_assigned started it.
                    if tp not in self._started or self._generation != generation:
                        break  # or fetched before on_assigned set its start; read again from there
                    await self._add(tp, record)
            await self._flush_due()

    async def _flush_due(self) -> None:
        """Queue the pending batches that have waited `flush_seconds`."""
        now = time.monotonic()
        for tp in [tp for tp, b in self._pending.items() if now - b.started >= self._flush_seconds]:
            # Queueing may wait, and a revocation meanwhile queues the partition's batch itself.
            if (batch := self._pending.pop(tp, None)) is not None:
                await self._enqueue(batch)

    async def _add(self, tp: TopicPartition, record: StoredRecord) -> None:
        """Add a record to its partition's pending batch, or skip it if it is a retry
        stored already; queue the batch once full."""
        batch_id = retry_batch_id(record)
        if batch_id is not None and not self._windows[tp].first_time(batch_id, record.key, record.timestamp_ms):
            batch = self._pending.get(tp)
            if batch is None:
                batch = self._pending[tp] = Batch(tp)
            batch.skip(record)
            self.retries_dropped += 1
            metrics.RETRIES_DROPPED.inc()
            return
        legacy, rows = record_shape(record)
        batch = self._pending.get(tp)
        if batch is not None and batch.legacy != legacy and batch.records:  # one format per insert
            generation = self._generation
            await self._enqueue(self._pending.pop(tp))
            if tp not in self._started or self._generation != generation:
                return  # revoked while the queue was full: the record is read again by its owner
            batch = None
        if batch is None:
            batch = self._pending[tp] = Batch(tp, legacy=legacy)
        batch.legacy = legacy
        batch.add(record, rows)
        if batch.rows >= self._batch_rows:
            await self._enqueue(self._pending.pop(tp))

    async def _enqueue(self, batch: Batch) -> None:
        if self._queue.full():
            owned = sorted(self._require_consumer().assignment(), key=lambda p: (p.topic, p.partition))
            self._require_consumer().pause(owned)
            try:
                await self._queue.put(batch)
            finally:
                self._require_consumer().resume(owned)
        else:
            self._queue.put_nowait(batch)

    async def _insert_loop(self) -> None:
        while True:
            batch = await self._queue.get()
            try:
                if batch.records:  # else every record was a retry stored already: only commit
                    await self._insert(batch)
                # Bounded: aiokafka retries a commit for a topic the broker lost forever, which
                # held this loop, and every rebalance waiting on it, with it. asyncio.timeout,
                # not wait_for: on Python 3.11 wait_for loses a cancellation that arrives as the
                # commit completes, and the writer's stop then waited for this loop forever.
                async with asyncio.timeout(COMMIT_TIMEOUT_SECONDS):
                    await self._require_consumer().commit({batch.partition: batch.last + 1})
                self.committed_records += len(batch.records)
                self._progress.advance(batch.partition.topic, batch.partition.partition, batch.last + 1)
            except Exception as exc:  # the Kafka client's commit errors have no common base
                # Typically the partition moved to another member mid-commit: it re-reads
                # from the last commit and skips what the warehouse already holds.
                logger.warning("commit of %s failed: %r", batch.token(), exc)
            finally:
                self._queue.task_done()

    async def _insert(self, batch: Batch) -> None:
        """Insert a batch; retried while the warehouse is down; bad records to the DLQ."""
        backoff = 0.5
        whole = True
        outcome_unknown = False  # the warehouse went away during an insert: it may hold part of it
        while True:
            started = time.perf_counter()
            try:
                if outcome_unknown:
                    await self._leave_out_stored(batch)
                    outcome_unknown = False
                    if not batch.records:
                        return
                if whole:
                    await self._warehouse.insert_json_lines(batch.table(), batch.body(), batch.token())
                else:
                    await self._insert_one_by_one(batch)
            except WarehouseError as exc:
                if isinstance(exc, _WarehouseDown) or not await self._warehouse.ping():
                    metrics.INSERT_FAILURES.labels("unavailable").inc()
                    self.healthy = False
                    outcome_unknown = True
                    logger.warning("warehouse unavailable (%s); retrying %s in %.1fs", exc, batch.token(), backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                    continue
                # Up, yet it refused the block: find the records it refuses. Once one by one,
                # stay one by one: the records' own tokens make a repeat a no-op.
                metrics.INSERT_FAILURES.labels("refused").inc()
                logger.warning("warehouse refused %s: %s; inserting its records one by one", batch.token(), exc)
                whole = False
                continue
            self.healthy = True
            metrics.INSERT_SECONDS.observe(time.perf_counter() - started)
            if whole:
                metrics.ROWS_INSERTED.inc(batch.rows)
            if self._crash_after_insert:
                logger.error("%s set: exiting between insert and commit", CRASH_AFTER_INSERT_ENV)
                os._exit(3)
            return

    async def _leave_out_stored(self, batch: Batch) -> None:
        """Leave out of the batch the records the warehouse holds whole (queries/writer_stored_records.sql).

        The same token again would be a no-op only if the warehouse kept the token with the
        part; a server killed between the two keeps the part alone, and the retry stored
        the records a second time.
        """
        body = await self._warehouse.query(
            "writer_stored_records", {"partition": batch.partition.partition, "first": batch.first, "last": batch.last}
        )
        stored = {row.offset: row.events for row in map(_stored_record_decoder.decode, body.splitlines())}
        if not stored:
            return
        missing = [record for record in batch.records if stored.get(record.offset) != record_shape(record)[1]]
        held = len(batch.records) - len(missing)
        logger.info("%s: the warehouse holds %d of its records already", batch.token(), held)
        batch.keep_only(missing)

    async def _insert_one_by_one(self, batch: Batch) -> None:
        for record in batch.records:
            single = Batch(batch.partition, legacy=batch.legacy)
            single.add(record, record_shape(record)[1])
            try:
                await self._warehouse.insert_json_lines(single.table(), single.body(), single.token())
                metrics.ROWS_INSERTED.inc(single.rows)
            except WarehouseError as exc:
                if not await self._warehouse.ping():
                    raise _WarehouseDown(str(exc)) from exc
                await self._dead_letter(record, str(exc))

    async def _dead_letter(self, record: StoredRecord, reason: str) -> None:
        headers = (
            *record.headers,
            ("reason", reason[:2000].encode()),
            ("source", f"{record.topic}:{record.partition}:{record.offset}".encode()),
        )
        while True:
            try:
                await self._log.append([Record(TELEMETRY_DLQ_TOPIC, record.key, record.value, headers)])
                break
            except LogUnavailable as exc:
                logger.warning("dead-letter append failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
        metrics.DLQ_RECORDS.inc()
        logger.error(
            "record %s:%d:%d sent to %s: %s",
            record.topic,
            record.partition,
            record.offset,
            TELEMETRY_DLQ_TOPIC,
            reason[:500],
        )

    async def _lag_loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                lag = await self._require_consumer().lag()
                if lag is not None:
                    metrics.WRITER_LAG.set(lag)
            await asyncio.sleep(LAG_REFRESH_SECONDS)
