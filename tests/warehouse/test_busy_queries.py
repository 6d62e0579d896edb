"""While the writer is under load (inserting most of the time), queries of the embedded
warehouse keep to `busy_query_threads` threads on threads niced below the inserts (and yield
the CPU to ingest); otherwise they use every core at the API's priority. On chDB."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from service.settings import Settings
from service.warehouse import client as warehouse_client
from service.warehouse.client import Warehouse
from service.warehouse.migrations import migrate

RECORD = (
    b'{"log_partition":0,"log_offset":0,"received_at":"2024-01-15T10:00:00Z","batch_id":"b","events":'
    b'[{"id":"evt_1","event_name":["crucible","model","inference"],"measurements":{"latency":1.5},'
    b'"metadata":{"experiment_id":"exp_1"},"timestamp":"2024-01-15T10:00:00Z","data":""}]}\n'
)


@pytest.fixture
async def warehouse(settings: Settings) -> AsyncIterator[Warehouse]:
    warehouse = Warehouse(settings)
    await warehouse.start()
    await migrate(warehouse)
    yield warehouse
    await warehouse.stop()


async def threads_a_query_may_use(warehouse: Warehouse) -> int:
    # The settings a named query would run with, as the engine applies them.
    busy = warehouse.busy()
    settings = warehouse.query_settings(busy)
    answer = await warehouse._with_query_client(
        lambda client: client.raw_query("SELECT getSetting('max_threads') AS n", fmt="JSONEachRow", settings=settings),
        busy,
    )
    return int(msgspec.json.decode(answer)["n"])


async def niceness_of_a_query_thread(warehouse: Warehouse) -> int:
    # The thread a named query would run on, now.
    return await warehouse._with_query_client(
        lambda _: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), warehouse.busy()
    )


def under_load(monkeypatch: Any) -> None:
    """Any insert within the window counts as load: a test's inserts take milliseconds."""
    monkeypatch.setattr(warehouse_client, "BUSY_SHARE", 1e-9)


def load_forgotten(warehouse: Warehouse, monkeypatch: Any) -> None:
    """The window has moved past the inserts so far."""
    monkeypatch.setattr(warehouse.insert_load, "window_seconds", 1e-9)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread niceness is set on Linux only")
async def test_queries_run_below_the_inserts_only_while_the_writer_is_under_load(
    warehouse: Warehouse, settings: Settings, monkeypatch: Any
) -> None:
    assert await niceness_of_a_query_thread(warehouse) == os.getpriority(os.PRIO_PROCESS, 0)
    await warehouse.insert_json_lines("telemetry_records", RECORD, "busy:0-0")
    # One small insert is not load: the next query keeps the API's priority.
    assert warehouse.insert_load.share() < warehouse_client.BUSY_SHARE
    assert await niceness_of_a_query_thread(warehouse) == os.getpriority(os.PRIO_PROCESS, 0)
    under_load(monkeypatch)
    assert await niceness_of_a_query_thread(warehouse) == settings.query_nice
    load_forgotten(warehouse, monkeypatch)
    assert await niceness_of_a_query_thread(warehouse) == os.getpriority(os.PRIO_PROCESS, 0)


async def test_queries_keep_to_one_thread_while_the_writer_is_under_load(
    warehouse: Warehouse, monkeypatch: Any
) -> None:
    idle = await threads_a_query_may_use(warehouse)
    await warehouse.insert_json_lines("telemetry_records", RECORD, "busy:0-0")
    assert await threads_a_query_may_use(warehouse) == idle
    under_load(monkeypatch)
    assert await threads_a_query_may_use(warehouse) == 1
    # A named query runs with them and answers as ever.
    filters = ("event_name", "experiment_id", "run_id", "model", "after", "before", "snapshot")
    body = await warehouse.query("telemetry_events_count", dict.fromkeys(filters))
    assert msgspec.json.decode(body)["total"] == 1
    load_forgotten(warehouse, monkeypatch)
    assert await threads_a_query_may_use(warehouse) == idle


async def test_no_limit_when_busy_query_threads_is_0(settings: Settings, monkeypatch: Any) -> None:
    warehouse = Warehouse(msgspec.structs.replace(settings, busy_query_threads=0))
    await warehouse.start()
    try:
        await migrate(warehouse)
        idle = await threads_a_query_may_use(warehouse)
        await warehouse.insert_json_lines("telemetry_records", RECORD, "busy:0-0")
        under_load(monkeypatch)
        assert await threads_a_query_may_use(warehouse) == idle
    finally:
        await warehouse.stop()
