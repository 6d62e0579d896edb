"""telemetry_points (migrations 0014-0016): one row per measurement, for every event the
warehouse holds, stored once; and run_latest_values (0017-0019), each run's latest value of
each measurement, kept from them. On the real engine (chDB), through the records' table the
writer inserts into."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import queries
from service.settings import Settings
from service.warehouse.client import Warehouse
from service.warehouse.migrations import migrate

POINTS_FIRST_MIGRATION = 14
LATEST_FIRST_MIGRATION = 17
POINTS = (
    "SELECT experiment_id, metric, value, event_name, run_id, model, step, epoch, log_partition, log_offset, log_index "
    "FROM telemetry_points ORDER BY log_partition, log_offset, log_index, metric"
)
# Two events in one record: a training step with step and epoch, an inference without.
RECORD = """
INSERT INTO telemetry_records (log_partition, log_offset, received_at, batch_id, events)
SETTINGS insert_deduplication_token = {token:String}
VALUES ({partition:UInt32}, {offset:UInt64}, now64(6), 'batch', [
    ('evt_1', ['crucible', 'run', 'progress'], map('loss', 0.5, 'step', 7, 'epoch', 1),
     map('experiment_id', 'exp_1', 'run_id', 'run_1'), now64(6), ''),
    ('evt_2', ['crucible', 'model', 'inference'], map('latency_ms', 120.5),
     map('experiment_id', 'exp_1', 'model', 'gpt-4'), now64(6), ''),
    ('evt_3', ['crucible', 'run', 'log'], map(), map('experiment_id', 'exp_1'), now64(6), '')])
"""
EXPECTED = [
    ("exp_1", "epoch", 1.0, "crucible.run.progress", "run_1", "", 7.0, 1.0, 0, 5, 0),
    ("exp_1", "loss", 0.5, "crucible.run.progress", "run_1", "", 7.0, 1.0, 0, 5, 0),
    ("exp_1", "step", 7.0, "crucible.run.progress", "run_1", "", 7.0, 1.0, 0, 5, 0),
    ("exp_1", "latency_ms", 120.5, "crucible.model.inference", "", "gpt-4", None, None, 0, 5, 1),
]


@pytest.fixture
async def warehouse(settings: Settings) -> AsyncIterator[Warehouse]:
    warehouse = Warehouse(settings)
    await warehouse.start()
    yield warehouse
    await warehouse.stop()


def apply_migrations_before(client: Any, first: int) -> None:
    """The warehouse as a server left it before migration `first` existed."""
    for number, name, sql in queries.migrations():
        if number < first:
            client.command(sql)
            client.insert("schema_migrations", [[number, name]], column_names=["version", "name"])


def insert_record(client: Any, token: str, partition: int = 0, offset: int = 5) -> None:
    client.command(RECORD, parameters={"token": token, "partition": partition, "offset": offset})


async def test_each_measurement_of_each_event_is_one_point_stored_once(warehouse: Warehouse) -> None:
    await migrate(warehouse)
    with warehouse.dedicated_client() as client:
        insert_record(client, "telemetry:0:5-5")
        insert_record(client, "telemetry:0:5-5")  # the writer's retry of the same range: a no-op
        assert client.query(POINTS).result_rows == EXPECTED
        insert_record(client, "telemetry:0:6-6", offset=6)
        assert client.command("SELECT count() FROM telemetry_points") == 2 * len(EXPECTED)


async def test_events_stored_before_the_points_table_get_their_points_once(warehouse: Warehouse) -> None:
    with warehouse.dedicated_client() as client:
        apply_migrations_before(client, POINTS_FIRST_MIGRATION)
        insert_record(client, "telemetry:0:5-5")
    assert await migrate(warehouse) == [
        f"{number:04d}_{name}" for number, name, _ in queries.migrations() if number >= POINTS_FIRST_MIGRATION
    ]
    with warehouse.dedicated_client() as client:
        assert client.query(POINTS).result_rows == EXPECTED
        # The backfill cut off before it was marked applied runs again: nothing twice.
        backfill = next(sql for number, name, sql in queries.migrations() if name == "telemetry_points_backfill")
        client.command(backfill)
        assert client.query(POINTS).result_rows == EXPECTED


# Progress events of run_1 in three records: the latest is by timestamp, then step, then log place.
PROGRESS = """
INSERT INTO telemetry_records (log_partition, log_offset, received_at, batch_id, events)
SETTINGS insert_deduplication_token = {token:String}
VALUES (0, {offset:UInt64}, now64(6), 'batch', [
    ('evt', ['crucible', 'run', 'progress'], map('loss', {loss:Float64}, 'step', {step:Float64}),
     map('experiment_id', 'exp_1', 'run_id', 'run_1'), {at:DateTime64(6)}, ''),
    ('evt_inference', ['crucible', 'model', 'inference'], map('loss', 99.0),
     map('experiment_id', 'exp_1', 'run_id', 'run_1'), {at:DateTime64(6)}, '')])
"""
LATEST_VALUES = queries.load("run_latest_values")


def insert_progress(client: Any, offset: int, loss: float, step: float, at: str) -> None:
    parameters = {"token": f"telemetry:0:{offset}-{offset}", "offset": offset, "loss": loss, "step": step, "at": at}
    client.command(PROGRESS, parameters=parameters)


def latest_values(client: Any, keys: list[str] | None = None) -> dict[str, float]:
    parameters = {"experiment_ids": ["exp_1"], "run_ids": ["run_1"], "keys": keys or []}
    return {key: value for _, key, value in client.query(LATEST_VALUES, parameters=parameters).result_rows}


def insert_three_progress_records(client: Any) -> None:
    insert_progress(client, 5, loss=0.5, step=7, at="2024-01-01 00:00:01")
    insert_progress(client, 6, loss=0.4, step=8, at="2024-01-01 00:00:01")  # same instant, later step: latest
    insert_progress(client, 7, loss=0.9, step=9, at="2024-01-01 00:00:00")  # later in the log, earlier in time


async def test_a_runs_latest_values_follow_time_then_step_and_leave_out_other_events(warehouse: Warehouse) -> None:
    await migrate(warehouse)
    with warehouse.dedicated_client() as client:
        insert_three_progress_records(client)
        insert_progress(client, 6, loss=0.4, step=8, at="2024-01-01 00:00:01")  # a retried range: a no-op
        assert latest_values(client) == {"loss": 0.4, "step": 8.0}
        assert latest_values(client, ["step"]) == {"step": 8.0}
        insert_progress(client, 8, loss=0.3, step=8, at="2024-01-01 00:00:01")  # same instant and step: log place
        assert latest_values(client) == {"loss": 0.3, "step": 8.0}


async def test_points_stored_before_the_latest_values_table_get_their_latest_values(warehouse: Warehouse) -> None:
    with warehouse.dedicated_client() as client:
        apply_migrations_before(client, LATEST_FIRST_MIGRATION)
        insert_three_progress_records(client)
    await migrate(warehouse)
    with warehouse.dedicated_client() as client:
        assert latest_values(client) == {"loss": 0.4, "step": 8.0}
        # The backfill cut off before it was marked applied runs again: the same answer.
        backfill = next(sql for number, name, sql in queries.migrations() if name == "run_latest_values_backfill")
        client.command(backfill)
        assert latest_values(client) == {"loss": 0.4, "step": 8.0}
