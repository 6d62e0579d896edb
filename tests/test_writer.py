"""The warehouse writer on the embedded log and chDB: splicing, DLQ, resuming, deduplication."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from schemas.telemetry import WarehouseRow
from service.appkeys import LOG, WAREHOUSE
from service.log import TELEMETRY_DLQ_TOPIC, TELEMETRY_TOPIC, Record, StoredRecord, TopicPartition
from service.writer import TABLE, rows_of
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


def record_of(*rows: WarehouseRow) -> Record:
    return Record(TELEMETRY_TOPIC, b"exp_w", msgspec.json.Encoder().encode_lines(list(rows)))


def test_rows_are_stamped_with_their_log_position() -> None:
    value = msgspec.json.Encoder().encode_lines([row(1), row(2)])
    stored = [StoredRecord(TELEMETRY_TOPIC, 3, 41, b"", value, (), 0)]
    lines = rows_of(stored).splitlines()
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
    bad = Record(TELEMETRY_TOPIC, b"exp_w", b'{"id":"evt_bad","timestamp":"not a time at all"}\n')
    await log.append([record_of(row(1), row(2)), bad, record_of(row(3))])

    async def good_rows_stored() -> bool:
        return await count_rows(client) == 3

    await eventually(good_rows_stored)
    consumer = await log.consumer("dlq-reader", [TELEMETRY_DLQ_TOPIC])
    dead = (await consumer.getmany(timeout=5, max_records=10))[TopicPartition(TELEMETRY_DLQ_TOPIC, 0)]
    assert [r.value for r in dead] == [bad.value]
    headers = dict(dead[0].headers)
    assert headers["source"] == f"{TELEMETRY_TOPIC}:0:1".encode()
    assert headers["reason"]
    metrics = await (await client.get("/metrics")).text()
    assert "crucible_dlq_records_total 1.0" in metrics


async def test_the_same_range_inserted_again_is_dropped(app_client: Any) -> None:
    client = await app_client(writer=False)
    warehouse = client.app[WAREHOUSE]
    body = rows_of([StoredRecord(TELEMETRY_TOPIC, 0, 0, b"", record_of(row(1), row(2)).value, (), 0)])
    for _ in range(3):
        await warehouse.insert_json_lines(TABLE, body, "crucible.telemetry:0:0-0")
    assert await count_rows(client) == 2


async def test_writer_resumes_after_what_the_warehouse_holds(app_client: Any, tmp_path: Any) -> None:
    # Rows of offsets 0..1 are in the warehouse but the group never committed: a crash
    # between insert and commit. The writer must start at offset 2.
    client = await app_client(writer=False)
    log, warehouse = client.app[LOG], client.app[WAREHOUSE]
    await log.append([record_of(row(1)), record_of(row(2)), record_of(row(3))])
    stored = [StoredRecord(TELEMETRY_TOPIC, 0, i, b"", record_of(row(i + 1)).value, (), 0) for i in range(2)]
    await warehouse.insert_json_lines(TABLE, rows_of(stored), "some-other-batching:0-1")
    await client.close()

    restarted = await app_client()

    async def caught_up() -> bool:
        return await count_rows(restarted) == 3

    await eventually(caught_up)
    consumer = await restarted.app[LOG].consumer("crucible-warehouse", [TELEMETRY_TOPIC])
    assert await consumer.committed(TopicPartition(TELEMETRY_TOPIC, 0)) == 3
