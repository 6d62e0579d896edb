"""The embedded event log: SQLite in WAL mode in the data dir, with group commit.

One thread owns the write connection. Appends that arrive while it is busy are
written together in one transaction, so they share one fsync: that is what makes
a durable 202 cheap. `synchronous=FULL` makes every commit reach the disk before
its appends are acknowledged. Readers use their own connections (WAL lets them
read while the writer writes). One partition per topic: a single process owns
the data dir, so more would only reorder records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from service.log.interface import (
    LogConsumer,
    LogUnavailable,
    PartitionListener,
    PartitionPosition,
    Record,
    StoredRecord,
    TopicPartition,
)

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    offset INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    headers BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    answer BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
-- Expired answers are found by age, without reading the whole table.
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_ms);
"""

PARTITION = 0  # one partition per topic, see the module docstring
Rows = list[tuple[object, ...]]
T = TypeVar("T")
# A fetch stops at the record that takes it past this many value bytes (at least one
# record always comes, as with Kafka's fetch.max.bytes). Without it a writer behind by a
# backlog read 256 records of ~300 KB each, 77 MB, in one go, on top of the batches it
# already held for the warehouse.
FETCH_MAX_BYTES = 4 << 20
# Expired records and idempotency answers are deleted once a minute, in steps of at most
# this many records per topic, one step after each group commit until none are left.
PRUNE_SECONDS = 60
PRUNE_CHUNK_RECORDS = 64


def encode_headers(headers: tuple[tuple[str, bytes], ...]) -> bytes:
    return b"\n".join(name.encode() + b"=" + value for name, value in headers)


def decode_headers(blob: bytes) -> tuple[tuple[str, bytes], ...]:
    if not blob:
        return ()
    pairs = []
    for line in blob.split(b"\n"):
        name, _, value = line.partition(b"=")
        pairs.append((name.decode(), value))
    return tuple(pairs)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


@dataclass
class _Append:
    records: Sequence[Record]
    remember: tuple[str, bytes] | None
    done: Future[list[tuple[int, int]]] = field(default_factory=Future)


# Rows per multi-row INSERT: far below SQLite's limit of 32,766 bound parameters.
INSERT_CHUNK_ROWS = 500


def _insert_many(conn: sqlite3.Connection, insert: str, rows: Sequence[tuple[object, ...]]) -> None:
    """`insert` (up to its VALUES) of `rows`, as a few multi-row statements."""
    for start in range(0, len(rows), INSERT_CHUNK_ROWS):
        chunk = rows[start : start + INSERT_CHUNK_ROWS]
        placeholders = "(" + ",".join("?" * len(chunk[0])) + ")"
        conn.execute(f"{insert} VALUES {','.join([placeholders] * len(chunk))}", [v for row in chunk for v in row])


class SqliteLog:
    """The embedded log; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        max_bytes: int = 0,
        idempotency_ttl_seconds: int = 86_400,
        retention_hours: float = 0,
        retained_topics: Sequence[str] = (),
    ) -> None:
        self._path = data_dir / "log.sqlite3"
        self._max_bytes = max_bytes
        self._retention_ms = round(retention_hours * 3_600_000)
        self._retained_topics = tuple(retained_topics)
        self._idempotency_ttl_ms = idempotency_ttl_seconds * 1000
        self._pending: queue.SimpleQueue[_Append | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._next_offset: dict[str, int] = {}
        self._append_waiters: list[asyncio.Future[None]] = []
        self.appends = 0  # commits this process made, counted on the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        writer = _connect(self._path)
        writer.executescript(SCHEMA)
        if self._max_bytes:
            page_size = writer.execute("PRAGMA page_size").fetchone()[0]
            writer.execute(f"PRAGMA max_page_count={max(self._max_bytes // page_size, 1)}")
        for topic, last in writer.execute("SELECT topic, max(offset) FROM records GROUP BY topic"):
            self._next_offset[topic] = last + 1
        # Retention may have deleted every record of a topic: offsets must still never go
        # back below what a group has committed, or its next records would be skipped.
        for topic, committed in writer.execute("SELECT topic, max(next_offset) FROM group_offsets GROUP BY topic"):
            self._next_offset[topic] = max(self._next_offset.get(topic, 0), committed)
        self._reader = _connect(self._path)
        self._thread = threading.Thread(target=self._write_loop, args=(writer,), name="log-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._pending.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        # A read whose task was cancelled may still run in its thread: close under its lock.
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    async def append(
        self, records: Sequence[Record], remember: tuple[str, bytes] | None = None
    ) -> list[tuple[int, int]]:
        if self._thread is None:
            raise LogUnavailable("the log is not running")
        job = _Append(records, remember)
        self._pending.put(job)
        return await asyncio.wrap_future(job.done)

    async def recall(self, idempotency_key: str) -> bytes | None:
        oldest = int(time.time() * 1000) - self._idempotency_ttl_ms
        row = await self._read(
            "SELECT answer FROM idempotency WHERE key = ? AND created_ms >= ?", (idempotency_key, oldest)
        )
        return bytes(row[0][0]) if row else None  # type: ignore[call-overload]

    async def ping(self) -> bool:
        try:
            await self._read("SELECT 1", ())
        except sqlite3.Error:
            return False
        return self._thread is not None and self._thread.is_alive()

    async def consumer(
        self, group: str, topics: Sequence[str], listener: PartitionListener | None = None
    ) -> LogConsumer:
        consumer = SqliteConsumer(self, group, topics)
        await consumer.load_positions()
        if listener is not None:
            await listener.on_assigned(consumer, consumer.assignment())
        return consumer

    def end_offset(self, topic: str) -> int:
        return self._next_offset.get(topic, 0)

    async def reader(self, topic: str, start: int = 0, partition: int = PARTITION) -> SqliteReader:
        if partition != PARTITION:
            raise ValueError(f"the embedded log has one partition per topic, not {partition}")
        return SqliteReader(self, topic, start)

    async def tail(self, topic: str) -> SqliteReader:
        return SqliteReader(self, topic, await self.file_end_offset(topic))

    async def positions(self, topic: str, group: str) -> list[PartitionPosition]:
        try:
            rows = await self._read(
                "SELECT next_offset FROM group_offsets WHERE group_id = ? AND topic = ?", (group, topic)
            )
            end = await self.file_end_offset(topic)
            first = (await self._read("SELECT min(offset) FROM records WHERE topic = ?", (topic,)))[0][0]
        except sqlite3.Error as exc:
            raise LogUnavailable(f"the embedded log cannot be read: {exc}") from exc
        committed = int(rows[0][0]) if rows else None  # type: ignore[call-overload]
        start = end if first is None else int(first)  # type: ignore[call-overload]
        return [PartitionPosition(PARTITION, end, committed, start)]

    async def group_members(self, group: str) -> list[str] | None:
        return None  # one process reads the embedded log: the one that runs its writer

    async def file_end_offset(self, topic: str) -> int:
        """The next offset of `topic` in the file, appends of other processes (`crucible keys`) included."""
        rows = await self._read("SELECT max(offset) FROM records WHERE topic = ?", (topic,))
        last = rows[0][0]
        return 0 if last is None else int(last) + 1  # type: ignore[call-overload]

    async def wait_for_append(self, timeout: float, since: int) -> None:
        """Return when this process appends something after the `appends` count `since`
        (at once if it already has), or after `timeout` seconds.

        Readers take `appends` before they query: an append that commits while their
        query runs then wakes them instead of leaving them asleep for the whole timeout.
        """
        if self.appends != since:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._append_waiters.append(waiter)
        # asyncio.wait, not wait_for: on Python 3.11 wait_for loses a cancellation that
        # arrives as the waiter completes, and a stopping consumer would then run on.
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            if not waiter.done():  # an idle log must not pile up waiters
                self._append_waiters.remove(waiter)

    def _wake_waiters(self) -> None:
        self.appends += 1
        waiters, self._append_waiters = self._append_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _on_reader(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the reader connection, in a thread, one caller at a time."""

        def run() -> T:
            with self._reader_lock:
                if self._reader is None:
                    raise LogUnavailable("the log is stopped")
                return work(self._reader)

        return await asyncio.to_thread(run)

    async def _read(self, sql: str, params: tuple[object, ...]) -> Rows:
        """Run one statement on the reader connection (group commits of offsets use it too)."""
        return await self._on_reader(lambda reader: reader.execute(sql, params).fetchall())

    async def _read_if_changed(
        self, sql: str, params: tuple[object, ...], unchanged_since: int | None
    ) -> tuple[int, Rows | None]:
        """The file's data version and one statement's rows; the rows are None, the statement
        not run, when no other connection (this process's writer, or another process) has
        committed to the file since it was at version `unchanged_since`."""

        def work(reader: sqlite3.Connection) -> tuple[int, Rows | None]:
            version = int(reader.execute("PRAGMA data_version").fetchone()[0])
            if version == unchanged_since:
                return version, None
            return version, reader.execute(sql, params).fetchall()

        return await self._on_reader(work)

    async def _read_records(self, topic: str, start: int, max_records: int) -> Rows:
        """Records of `topic` from offset `start` on, at most `max_records` and about FETCH_MAX_BYTES."""
        return await self._on_reader(lambda reader: _fetch_rows(reader, topic, start, max_records))

    # -- the writer thread ---------------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        last_prune = 0.0
        prune_more = False
        while True:
            first = self._pending.get()
            if first is None:
                break
            jobs = [first]
            stop = False
            # Group commit: everything queued while the previous commit was syncing.
            while True:
                try:
                    job = self._pending.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            self._commit(conn, jobs)
            if prune_more or time.monotonic() - last_prune > PRUNE_SECONDS:
                last_prune = time.monotonic()
                prune_more = self._prune(conn)
            if stop:
                break
        conn.close()

    def _commit(self, conn: sqlite3.Connection, jobs: list[_Append]) -> None:
        """Write a group of appends in one transaction.

        Every statement this thread runs gives up the GIL and must win it back from a
        busy event loop, which can take a whole switch interval: so the group's rows go
        in one multi-row INSERT per table, not one statement per record.
        """
        now_ms = int(time.time() * 1000)
        next_offset = dict(self._next_offset)
        results: list[list[tuple[int, int]]] = []
        rows: list[tuple[str, int, bytes, bytes, bytes, int]] = []
        answers: list[tuple[str, bytes, int]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Another process (`crucible keys`) may have appended to the same file: the
            # transaction holds the write lock, so the file's last offset is authoritative.
            for topic in {record.topic for job in jobs for record in job.records}:
                (last,) = conn.execute("SELECT max(offset) FROM records WHERE topic = ?", (topic,)).fetchone()
                if last is not None:
                    next_offset[topic] = max(next_offset.get(topic, 0), last + 1)
            for job in jobs:
                positions = []
                for record in job.records:
                    offset = next_offset.get(record.topic, 0)
                    next_offset[record.topic] = offset + 1
                    positions.append((PARTITION, offset))
                    rows.append(
                        (record.topic, offset, record.key, record.value, encode_headers(record.headers), now_ms)
                    )
                if job.remember is not None:
                    answers.append((job.remember[0], job.remember[1], now_ms))
                results.append(positions)
            _insert_many(conn, "INSERT INTO records (topic, offset, key, value, headers, timestamp_ms)", rows)
            _insert_many(conn, "INSERT OR REPLACE INTO idempotency (key, answer, created_ms)", answers)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            logger.error("log append failed, nothing written: %s", exc)
            for job in jobs:
                job.done.set_exception(LogUnavailable(str(exc)))
            return
        self._next_offset = next_offset
        for job, positions in zip(jobs, results, strict=True):
            job.done.set_result(positions)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_waiters)

    def _prune(self, conn: sqlite3.Connection) -> bool:
        """Forget expired idempotency answers, and records past retention that every
        consumer group has committed (a record some group still needs is kept).

        Returns whether records were left for another round: each round deletes at most
        PRUNE_CHUNK_RECORDS per topic, so appends wait for one short step, not a backlog.
        """
        now_ms = int(time.time() * 1000)
        more = False
        with contextlib.suppress(sqlite3.Error):
            conn.execute("DELETE FROM idempotency WHERE created_ms < ?", (now_ms - self._idempotency_ttl_ms,))
            if self._retention_ms:
                for topic in self._retained_topics:
                    more |= _prune_topic(conn, topic, now_ms - self._retention_ms)
        return more


def _prune_topic(conn: sqlite3.Connection, topic: str, before_ms: int) -> bool:
    """Delete the topic's oldest records appended before `before_ms` that every group has
    committed, up to PRUNE_CHUNK_RECORDS of them; True if more of them are left.

    A record's timestamp sits after its value, so reading it walks the value's overflow
    pages: filtering the topic on it read the whole log (0.9 s for a 4.6 GB log, every
    minute, while appends waited). Offsets are given in append order, so a binary search
    over the oldest records reads only a handful.
    """
    (first,) = conn.execute("SELECT min(offset) FROM records WHERE topic = ?", (topic,)).fetchone()
    (committed,) = conn.execute(
        "SELECT coalesce(min(next_offset), 0) FROM group_offsets WHERE topic = ?", (topic,)
    ).fetchone()
    if first is None or first >= committed:
        return False
    end = min(committed, first + PRUNE_CHUNK_RECORDS)
    low, high = first, end  # the first offset in [first, end) appended at `before_ms` or later
    while low < high:
        middle = (low + high) // 2
        row = conn.execute(
            "SELECT timestamp_ms FROM records WHERE topic = ? AND offset >= ? ORDER BY offset LIMIT 1",
            (topic, middle),
        ).fetchone()
        if row is not None and row[0] < before_ms:
            low = middle + 1
        else:
            high = middle
    if low > first:
        conn.execute("DELETE FROM records WHERE topic = ? AND offset < ?", (topic, low))
    return low == end < committed


def _fetch_rows(reader: sqlite3.Connection, topic: str, start: int, max_records: int) -> Rows:
    """The rows of one fetch: they stop at the one that takes it past FETCH_MAX_BYTES."""
    rows: Rows = []
    size = 0
    # The cursor steps through SQLite lazily, so stopping early reads no further;
    # closing it ends its read transaction at once (WAL checkpoints wait for those).
    with contextlib.closing(
        reader.execute(
            "SELECT offset, key, value, headers, timestamp_ms FROM records"
            " WHERE topic = ? AND offset >= ? ORDER BY offset LIMIT ?",
            (topic, start, max_records),
        )
    ) as cursor:
        for row in cursor:
            rows.append(row)
            size += len(row[2])
            if size >= FETCH_MAX_BYTES:
                break
    return rows


class SqliteConsumer:
    """A consumer group member of the embedded log: it owns every topic's one partition."""

    def __init__(self, log: SqliteLog, group: str, topics: Sequence[str]) -> None:
        self._log = log
        self._group = group
        self._partitions = {TopicPartition(topic, PARTITION) for topic in topics}
        self._position: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()

    async def load_positions(self) -> None:
        for tp in self._partitions:
            self._position[tp] = await self.committed(tp) or 0

    async def getmany(self, timeout: float, max_records: int) -> dict[TopicPartition, list[StoredRecord]]:
        deadline = time.monotonic() + timeout
        while True:
            appends = self._log.appends
            batch = await self._fetch(max_records)
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                return batch
            await self._log.wait_for_append(min(remaining, 0.05), appends)

    async def _fetch(self, max_records: int) -> dict[TopicPartition, list[StoredRecord]]:
        batch: dict[TopicPartition, list[StoredRecord]] = {}
        for tp in sorted(self._partitions - self._paused, key=lambda p: p.topic):
            start = self._position[tp]
            if start >= self._log.end_offset(tp.topic):
                continue
            rows = await self._log._read_records(tp.topic, start, max_records)
            if rows:
                batch[tp] = [
                    StoredRecord(tp.topic, PARTITION, o, k, v, decode_headers(h), ts)  # type: ignore[arg-type]
                    for o, k, v, h, ts in rows
                ]
                self._position[tp] = batch[tp][-1].offset + 1
        return batch

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            await self._log._read(
                "INSERT INTO group_offsets (group_id, topic, next_offset) VALUES (?,?,?)"
                " ON CONFLICT (group_id, topic) DO UPDATE SET next_offset = excluded.next_offset",
                (self._group, tp.topic, offset),
            )

    async def committed(self, partition: TopicPartition) -> int | None:
        rows = await self._log._read(
            "SELECT next_offset FROM group_offsets WHERE group_id = ? AND topic = ?",
            (self._group, partition.topic),
        )
        return int(rows[0][0]) if rows else None  # type: ignore[call-overload]

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._position[partition] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self._partitions)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self._paused.update(partitions)

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self._paused.difference_update(partitions)

    async def lag(self) -> int | None:
        total = 0
        for tp in self._partitions:
            total += self._log.end_offset(tp.topic) - (await self.committed(tp) or 0)
        return total

    async def stop(self) -> None:
        return None


class SqliteReader:
    """Reads one topic of the embedded log in order, outside any consumer group."""

    # Appends made by another process on the same file wake nobody here: poll this often.
    # A poll asks SQLite's data version first, and reads only when the file has changed: the
    # read itself, past the end of a topic, costs 3-8 ms, because the B-tree compares against
    # the next record, whose value (a whole batch) it loads from its overflow pages.
    POLL_SECONDS = 0.1

    def __init__(self, log: SqliteLog, topic: str, start: int) -> None:
        self._log = log
        self._topic = topic
        self._position = start
        self._caught_up_at: int | None = None  # the data version at which the last read found nothing

    async def read(self, timeout: float, max_records: int) -> list[StoredRecord]:
        deadline = time.monotonic() + timeout
        while True:
            appends = self._log.appends
            version, found = await self._log._read_if_changed(
                "SELECT offset, key, value, headers, timestamp_ms FROM records"
                " WHERE topic = ? AND offset >= ? ORDER BY offset LIMIT ?",
                (self._topic, self._position, max_records),
                self._caught_up_at,
            )
            rows = found or []
            if found is not None:  # a full read can leave more behind, unchanged file or not
                self._caught_up_at = None if rows else version
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                break
            await self._log.wait_for_append(min(remaining, self.POLL_SECONDS), appends)
        records = [
            StoredRecord(self._topic, PARTITION, o, k, v, decode_headers(h), ts)  # type: ignore[arg-type]
            for o, k, v, h, ts in rows
        ]
        if records:
            self._position = records[-1].offset + 1
        return records

    async def end_offset(self) -> int | None:
        return await self._log.file_end_offset(self._topic)

    async def stop(self) -> None:
        return None
