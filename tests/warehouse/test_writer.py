"""The warehouse writer on the embedded log and chDB: record bodies, DLQ, resuming, deduplication."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from typing import Any

import msgspec
import pytest

from schemas.telemetry import TelemetryEvent, WarehouseRow
from service.http.appkeys import LOG, SETTINGS, WAREHOUSE
from service.ingest.batch import record_value
from service.ingest.ingestor import telemetry_record
from service.log.interface import TELEMETRY_DLQ_TOPIC, TELEMETRY_TOPIC, Record, StoredRecord, TopicPartition
from service.warehouse.client import WarehouseError
from service.warehouse.writer import (
    LEGACY_TABLE,
    TABLE,
    Batch,
    LogReplaced,
    WarehouseWriter,
    record_shape,
    records_of,
    rows_of,
)
from tests.support import eventually

NOW = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.UTC)


def row(i: int, experiment: str = "exp_w") -> WarehouseRow:
    return WarehouseRow(
        id=f"evt_w_{i}",
        event_name="crucible.test",
        experiment_id=experiment,
        run_id="",
        model="",
        timestamp=NOW,
        received_at=NOW,
        measurements={"v": float(i)},
        metadata={"note": "a}\nb"},
        data="",
        batch_id="b",
    )


def legacy_record_of(*rows: WarehouseRow) -> Record:
    """A format v1 record, as logs written before format v2 hold them."""
    return Record(TELEMETRY_TOPIC, b"exp_w", msgspec.json.Encoder().encode_lines(list(rows)))


def event(i: int) -> TelemetryEvent:
    return TelemetryEvent(
        id=f"evt_w_{i}",
        event_name=["crucible", "test"],
        timestamp=NOW,
        measurements={"v": float(i)},
        metadata={"experiment_id": "exp_w", "note": "a}\nb"},
    )


def record_of(*numbers: int) -> Record:
    events = [event(i) for i in numbers]
    return telemetry_record("exp_w", record_value(events, "b", NOW), len(events))


def stored(record: Record, offset: int, partition: int = 0) -> StoredRecord:
    return StoredRecord(TELEMETRY_TOPIC, partition, offset, record.key, record.value, record.headers, 0)


def test_records_get_their_log_position_in_front() -> None:
    rows = records_of([stored(record_of(1, 2), 41, partition=3), stored(record_of(3), 42, partition=3)])
    lines = b"".join(rows).splitlines()
    decoded = [msgspec.json.decode(line) for line in lines]
    assert [(d["log_partition"], d["log_offset"], len(d["events"])) for d in decoded] == [(3, 41, 2), (3, 42, 1)]
    assert decoded[0]["events"][0]["metadata"]["note"] == "a}\nb"


def test_record_shape_reads_the_format_from_the_headers() -> None:
    assert record_shape(stored(record_of(1, 2, 3), 0)) == (False, 3)
    assert record_shape(stored(legacy_record_of(row(1), row(2)), 0)) == (True, 2)


def test_legacy_rows_are_stamped_with_their_log_position() -> None:
    value = msgspec.json.Encoder().encode_lines([row(1), row(2)])
    stored = [StoredRecord(TELEMETRY_TOPIC, 3, 41, b"", value, (), 0)]
    lines = b"".join(rows_of(stored)).splitlines()
    assert len(lines) == 2
    decoded = [msgspec.json.decode(line) for line in lines]
    assert [(d["log_partition"], d["log_offset"]) for d in decoded] == [(3, 41), (3, 41)]
    assert decoded[0]["metadata"] == {"note": "a}\nb"}  # a brace and newline inside a string stay as they are


async def count_rows(client: Any) -> int:
    body = await client.app[WAREHOUSE].query(
        "telemetry_events_count",
        {
            "event_name": None,
            "experiment_id": "exp_w",
            "run_id": None,
            "model": None,
            "after": None,
            "before": None,
            "snapshot": None,
        },
    )
    return int(msgspec.json.decode(body.splitlines()[0])["total"])


async def test_a_record_the_warehouse_refuses_goes_to_the_dead_letter_topic(app_client: Any) -> None:
    client = await app_client()
    log = client.app[LOG]
    good = record_of(1, 2)
    unparsable = good.value.replace(b'"received_at":"', b'"received_at":"not a time')
    bad = Record(TELEMETRY_TOPIC, b"exp_w", unparsable, good.headers)
    bad_legacy = Record(TELEMETRY_TOPIC, b"exp_w", b'{"id":"evt_bad","timestamp":"not a time at all"}\n')
    await log.append([good, bad, record_of(3), bad_legacy, legacy_record_of(row(4))])

    async def good_rows_stored() -> bool:
        return await count_rows(client) == 4

    await eventually(good_rows_stored)
    consumer = await log.consumer("dlq-reader", [TELEMETRY_DLQ_TOPIC])
    dead = (await consumer.getmany(timeout=5, max_records=10))[TopicPartition(TELEMETRY_DLQ_TOPIC, 0)]
    assert [r.value for r in dead] == [bad.value, bad_legacy.value]
    assert [dict(r.headers)["source"] for r in dead] == [f"{TELEMETRY_TOPIC}:0:{i}".encode() for i in (1, 3)]
    assert all(dict(r.headers)["reason"] for r in dead)
    metrics = await (await client.get("/metrics")).text()
    assert "crucible_dlq_records_total 2.0" in metrics


@pytest.mark.parametrize("legacy", [False, True])
async def test_the_same_range_inserted_again_is_dropped(app_client: Any, legacy: bool) -> None:
    client = await app_client(writer=False)
    warehouse = client.app[WAREHOUSE]
    if legacy:
        table, body = LEGACY_TABLE, list(rows_of([stored(legacy_record_of(row(1), row(2)), 0)]))
    else:
        table, body = TABLE, list(records_of([stored(record_of(1, 2), 0)]))
    for _ in range(3):
        await warehouse.insert_json_lines(table, body, "crucible.telemetry:0:0-0")
    assert await count_rows(client) == 2


async def test_writer_resumes_after_what_the_warehouse_holds(app_client: Any, tmp_path: Any) -> None:
    # Rows of offsets 0..1 are in the warehouse but the group never committed: a crash
    # between insert and commit. The writer must start at offset 2.
    client = await app_client(writer=False)
    log, warehouse = client.app[LOG], client.app[WAREHOUSE]
    records = [record_of(1), record_of(2), record_of(3)]
    await log.append(records)
    await warehouse.insert_json_lines(TABLE, records_of([stored(r, i) for i, r in enumerate(records[:2])]), "other:0-1")
    await client.close()

    restarted = await app_client()

    async def caught_up() -> bool:
        # The commit follows the insert, so the rows can be visible a moment before it.
        [position] = await restarted.app[LOG].positions(TELEMETRY_TOPIC, "crucible-warehouse")
        return position.committed == 3 and await count_rows(restarted) == 3

    await eventually(caught_up)


KEPT, REVOKED = TopicPartition(TELEMETRY_TOPIC, 0), TopicPartition(TELEMETRY_TOPIC, 1)


async def writer_with_a_full_queue(app_client: Any) -> tuple[WarehouseWriter, Any]:
    """A writer owning partitions 0 and 1 of a real embedded consumer, its insert queue (one
    batch) full: whatever queues a batch next waits, and a rebalance can come meanwhile."""
    client = await app_client(writer=False, writer_queue_batches=1)
    log = client.app[LOG]
    writer = WarehouseWriter(log, client.app[WAREHOUSE], client.app[SETTINGS])
    consumer = await log.consumer("test-writer", [TELEMETRY_TOPIC])
    writer._consumer = consumer
    writer._started = {KEPT, REVOKED}
    writer._queue.put_nowait(Batch(KEPT, records=[stored(record_of(9), 9)]))
    return writer, consumer


async def revoke_while_waiting(writer: WarehouseWriter, consumer: Any, waiting: Any, back: bool = False) -> list[Batch]:
    """Revoke partition 1 while `waiting` (a coroutine) waits for room (`back`: and give it
    back to this writer, as on_assigned does); drain the queue until both are done; the
    batches queued, in order."""
    step = asyncio.create_task(waiting)
    await asyncio.sleep(0.01)
    revocation = asyncio.create_task(writer.on_revoked(consumer, {REVOKED}))
    await asyncio.sleep(0.01)
    if back:
        writer._started.add(REVOKED)
    queued = []
    while not (step.done() and revocation.done()):
        queued.append(await asyncio.wait_for(writer._queue.get(), 5))
        writer._queue.task_done()
        await asyncio.sleep(0.01)  # the waiting put and the revocation's join go on
    await step  # raises what it raised
    await revocation
    await consumer.stop()
    return queued


async def test_a_partition_revoked_while_a_flush_waits_for_room_is_queued_once(app_client: Any) -> None:
    """Queueing a due batch waits while the insert queue is full; a rebalance that revokes
    another partition meanwhile queues that partition's batch itself. The flush must not
    queue it again, nor fail on it (it stopped the writer with a KeyError)."""
    writer, consumer = await writer_with_a_full_queue(app_client)
    for offset, tp in enumerate((KEPT, REVOKED)):
        writer._pending[tp] = Batch(tp, records=[stored(record_of(offset), offset, tp.partition)], started=0.0)
    queued = await revoke_while_waiting(writer, consumer, writer._flush_due())
    assert sorted((batch.partition.partition, batch.first) for batch in queued) == [(0, 0), (0, 9), (1, 1)]
    assert writer._pending == {}


async def test_a_record_of_a_partition_revoked_while_its_format_switch_waits_is_the_next_owners(
    app_client: Any,
) -> None:
    """A record of the other format first queues the pending batch, which may wait; when the
    partition is revoked meanwhile, the record is left to the next owner (which starts after
    the last commit), not inserted by this writer as well."""
    writer, consumer = await writer_with_a_full_queue(app_client)
    writer._pending[REVOKED] = Batch(REVOKED, records=[stored(legacy_record_of(row(1)), 1, 1)], legacy=True)
    queued = await revoke_while_waiting(writer, consumer, writer._add(REVOKED, stored(record_of(2), 2, 1)))
    assert [(batch.partition.partition, batch.first) for batch in queued] == [(0, 9), (1, 1)]
    assert writer._pending == {}


async def test_a_record_read_before_its_partition_came_back_to_this_writer_is_not_added(app_client: Any) -> None:
    """A rebalance may revoke a partition and give it back to the same writer, which then
    starts it again from the warehouse's position. A record read before that (its format
    switch waiting for room meanwhile) is stale: adding it too put records twice or out of
    order in one batch. It is read again from the new start instead."""
    writer, consumer = await writer_with_a_full_queue(app_client)
    writer._pending[REVOKED] = Batch(REVOKED, records=[stored(legacy_record_of(row(1)), 1, 1)], legacy=True)
    waiting = writer._add(REVOKED, stored(record_of(2), 2, 1))
    queued = await revoke_while_waiting(writer, consumer, waiting, back=True)
    assert [(batch.partition.partition, batch.first) for batch in queued] == [(0, 9), (1, 1)]
    assert writer._pending == {}


# -- retries of a batch sent with an Idempotency-Key ------------------------------------


def retry_record(experiment: str, *numbers: int, batch_id: str = "k1") -> Record:
    """A record of a batch sent with an Idempotency-Key, as every attempt of it appends it."""
    events = [
        TelemetryEvent(
            id=f"evt_{batch_id}_{i}",
            event_name=["crucible", "test"],
            timestamp=NOW,
            measurements={"v": float(i)},
            metadata={"experiment_id": experiment},
        )
        for i in numbers
    ]
    return telemetry_record(experiment, record_value(events, batch_id, NOW), len(events), batch_id)


async def stored_ids(client: Any) -> list[str]:
    with client.app[WAREHOUSE].dedicated_client() as warehouse:
        rows = warehouse.query("SELECT id FROM telemetry_events ORDER BY id").result_rows
    return [row[0] for row in rows]


async def writer_caught_up(client: Any, end: int) -> None:
    consumer = await client.app[LOG].consumer("crucible-warehouse", [TELEMETRY_TOPIC])
    try:

        async def committed_all() -> bool:
            return await consumer.committed(TopicPartition(TELEMETRY_TOPIC, 0)) == end

        await eventually(committed_all)
    finally:
        await consumer.stop()


async def test_a_retried_batch_in_the_log_is_stored_once(app_client: Any) -> None:
    client = await app_client()
    log = client.app[LOG]
    # The same batch (two experiments: two records) three times, twice in one append,
    # so that copies land in one insert and in later ones; another batch id and a batch
    # without a key (no header) are stored whatever their ids.
    first = [retry_record("exp_a", 0, 1), retry_record("exp_b", 2)]
    await log.append([*first, *first, retry_record("exp_a", 0, batch_id="k2"), record_of(7)])
    await writer_caught_up(client, 6)
    await log.append([first[1], record_of(7), first[0]])
    await writer_caught_up(client, 9)
    assert await stored_ids(client) == ["evt_k1_0", "evt_k1_1", "evt_k1_2", "evt_k2_0", "evt_w_7", "evt_w_7"]
    metrics = await (await client.get("/metrics")).text()
    assert "crucible_writer_retries_dropped_total 4.0" in metrics


async def test_a_writer_that_takes_the_partition_over_drops_a_retry_stored_before(app_client: Any) -> None:
    client = await app_client()
    await client.app[LOG].append([retry_record("exp_a", 0, 1), retry_record("exp_b", 2)])
    await writer_caught_up(client, 2)
    await client.close()
    # The retry is appended while no writer runs; the next one knows the batch only
    # from the warehouse.
    appender = await app_client(writer=False)
    await appender.app[LOG].append([retry_record("exp_b", 2), retry_record("exp_a", 0, 1), retry_record("exp_c", 3)])
    await appender.close()

    restarted = await app_client()
    await writer_caught_up(restarted, 5)
    assert await stored_ids(restarted) == ["evt_k1_0", "evt_k1_1", "evt_k1_2", "evt_k1_3"]


async def test_a_crash_between_insert_and_commit_of_a_batch_with_a_dropped_retry_stores_it_once(
    app_client: Any,
) -> None:
    # Offsets 0..1 are a record and its retry: a writer inserted offset 0 (the retry
    # dropped, its token covering 0-1) and died before committing. The next one starts
    # after offset 0, and must drop offset 1 again, knowing it only from the warehouse.
    client = await app_client(writer=False)
    log, warehouse = client.app[LOG], client.app[WAREHOUSE]
    first, retry = retry_record("exp_a", 0, 1), retry_record("exp_a", 0, 1)
    await log.append([first, retry, retry_record("exp_a", 2, batch_id="k2")])
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    inserted = StoredRecord(TELEMETRY_TOPIC, 0, 0, first.key, first.value, first.headers, now_ms)
    await warehouse.insert_json_lines(TABLE, records_of([inserted]), f"{TELEMETRY_TOPIC}:0:0-1")
    await client.close()

    restarted = await app_client()
    await writer_caught_up(restarted, 3)
    assert await stored_ids(restarted) == ["evt_k1_0", "evt_k1_1", "evt_k2_2"]


class DiesMidInsert:
    """The warehouse, killed during the first insert after storing part of it without the
    insert's token (as the ClickHouse endpoint killed mid-insert left it): that insert fails
    and the warehouse is away for one ping, then back."""

    def __init__(self, warehouse: Any, kept: list[StoredRecord]) -> None:
        self._warehouse = warehouse
        self._kept = kept
        self._died = False
        self._down_pings = 1

    async def insert_json_lines(self, table: str, body: Any, token: str) -> None:
        if not self._died:
            self._died = True
            await self._warehouse.insert_json_lines(table, list(records_of(self._kept)), "a token never recorded")
            raise WarehouseError("Connection refused")
        await self._warehouse.insert_json_lines(table, body, token)

    async def ping(self) -> bool:
        self._down_pings -= 1
        return self._down_pings < 0

    async def query(self, name: str, parameters: dict[str, Any]) -> bytes:
        return bytes(await self._warehouse.query(name, parameters))


async def test_a_batch_retried_after_the_warehouse_died_mid_insert_leaves_out_what_it_kept(app_client: Any) -> None:
    client = await app_client(writer=False)
    records = [stored(record_of(2 * n, 2 * n + 1), n) for n in range(4)]
    warehouse = DiesMidInsert(client.app[WAREHOUSE], kept=records[:3])
    writer = WarehouseWriter(client.app[LOG], warehouse, client.app[SETTINGS])  # type: ignore[arg-type]
    batch = Batch(TopicPartition(TELEMETRY_TOPIC, 0), records=list(records))
    await writer._insert(batch)
    assert await count_rows(client) == 8  # each event once
    assert [r.offset for r in batch.records] == [3] and batch.token().endswith(":0-3:less-3")


@pytest.mark.parametrize("new_log_records", [2, 8])
async def test_a_writer_stops_when_the_log_is_not_the_one_the_warehouse_was_filled_from(
    app_client: Any, new_log_records: int
) -> None:
    """The log was made anew (a broker that kept nothing): its new records reuse offsets the
    warehouse holds, and resuming after them would skip them without a word. Fewer records
    than the warehouse holds, or as many (same offsets, other batches)."""
    client = await app_client(writer=False)
    log, warehouse = client.app[LOG], client.app[WAREHOUSE]
    old = [stored(record_of(n), n) for n in range(6)]
    await warehouse.insert_json_lines(TABLE, records_of(old), "crucible.telemetry:0:0-5")
    new = [event(100 + n) for n in range(new_log_records)]
    await log.append([telemetry_record("exp_w", record_value([e], "new", NOW), 1) for e in new])
    writer = WarehouseWriter(log, warehouse, client.app[SETTINGS])
    expected = (
        "gives no record at offset 5 \\(its end: 2\\), but the warehouse holds that offset"
        if new_log_records == 2
        else "record at offset 5 is of batch 'new' in the log and of batch 'b' in the warehouse"
    )
    with pytest.raises(LogReplaced, match=expected):
        await asyncio.wait_for(writer.run(), 20)
    assert await count_rows(client) == 6


async def test_a_record_retention_took_is_no_sign_of_another_log(app_client: Any) -> None:
    """A writer away longer than the log's retention finds the last record it stored gone
    from the log: that log is still the warehouse's, and the writer goes on."""
    client = await app_client(writer=False)
    log, warehouse, settings = client.app[LOG], client.app[WAREHOUSE], client.app[SETTINGS]
    records = [record_of(n) for n in range(8)]
    await log.append(records)
    await warehouse.insert_json_lines(TABLE, records_of([stored(r, n) for n, r in enumerate(records[:6])]), "t:0-5")
    with sqlite3.connect(settings.data_path / "log.sqlite3") as db:  # what retention does to old records
        db.execute("DELETE FROM records WHERE topic = ? AND offset < 6", (TELEMETRY_TOPIC,))
    writer = WarehouseWriter(log, warehouse, settings)
    running = asyncio.create_task(writer.run())

    async def caught_up() -> bool:
        assert not running.done(), running
        return await count_rows(client) == 8

    await eventually(caught_up)
    running.cancel()
