"""Durability and exactly-once of the embedded default, with `crucible serve` as a child process.

A 202 means the batch is in the log on disk; the writer inserts each log record into
the warehouse exactly once, across a SIGKILL of the whole process, a crash between an
insert and its commit, and a replay of the whole log into an empty warehouse.

"The writer has caught up" is read from the embedded log itself (SQLite): the warehouse
group's committed offset equals the end of the telemetry topic. The writer commits only
after an insert returned, so from then on the warehouse holds everything and nothing
more will be inserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect
import numpy as np
import pytest

from service.log.interface import WAREHOUSE_GROUP
from service.warehouse.writer import CRASH_AFTER_INSERT_ENV
from tests.conftest import admin_secret, bearer, make_settings
from tests.support import ServerProcess, eventually, free_port, log_positions, serve_processes

pytestmark = pytest.mark.slow

EVENTS_URL = "/api/v1/telemetry/events"
AGGREGATE_URL = "/api/v1/telemetry/aggregate"
CATCH_UP_TIMEOUT = 60.0


# -- helpers -------------------------------------------------------------------------------


def event(event_id: str, experiment_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "event_name": ["crucible", "model", "inference"],
        "measurements": {"duration_ms": 1.0},
        "metadata": {"experiment_id": experiment_id},
        **extra,
    }


async def wait_caught_up(data_dir: Path) -> None:
    async def caught_up() -> bool:
        end, committed = await asyncio.to_thread(log_positions, data_dir)
        assert committed <= end
        return end > 0 and committed == end

    await eventually(caught_up, timeout=CATCH_UP_TIMEOUT, interval=0.1)


async def stored_ids(session: aiohttp.ClientSession, url: str, experiment_id: str) -> Counter[str]:
    """Every stored event id of an experiment (with how often it is stored), page by page."""
    ids: Counter[str] = Counter()
    params = {"filter[experiment_id]": experiment_id, "per_page": "100"}
    while True:
        async with session.get(url + EVENTS_URL, params=params) as answer:
            assert answer.status == 200, await answer.text()
            page = await answer.json()
        ids.update(e["id"] for e in page["data"])
        if not page["meta"]["has_more"]:
            assert page["meta"]["total"] == sum(ids.values())
            return ids
        params["cursor"] = page["meta"]["next_cursor"]


async def count(session: aiohttp.ClientSession, url: str, **filters: str) -> int:
    params = {"agg": "count", **{f"filter[{k}]": v for k, v in filters.items()}}
    async with session.get(url + AGGREGATE_URL, params=params) as answer:
        assert answer.status == 200, await answer.text()
        points = (await answer.json())["data"]
    return sum(p["count"] for p in points)


class Sender:
    """Posts batches of events with ids of our own, and knows which ones were acknowledged.

    `unsure` holds the ids of batches whose answer never came (the server died while
    they were in flight): they may or may not be stored, but at most once.
    """

    def __init__(self, session: aiohttp.ClientSession, server: ServerProcess, experiment_id: str) -> None:
        self.session = session
        self.server = server
        self.experiment_id = experiment_id
        self.acknowledged: set[str] = set()
        self.unsure: set[str] = set()

    async def post(self, ids: list[str]) -> bool:
        """Whether the batch was acknowledged (202); False if the server was gone."""
        body = {"events": [event(i, self.experiment_id) for i in ids]}
        try:
            async with self.session.post(self.server.url + EVENTS_URL, json=body) as answer:
                assert answer.status == 202, await answer.text()
                assert (await answer.json())["data"]["accepted"] == len(ids)
        except aiohttp.ClientError:
            self.unsure.update(ids)
            return False
        self.acknowledged.update(ids)
        return True

    def check_stored(self, stored: Counter[str]) -> None:
        """Every acknowledged event once; nothing else but, at most once, an unsure one."""
        missing = self.acknowledged - set(stored)
        assert not missing, f"{len(missing)} acknowledged events are lost, e.g. {sorted(missing)[:5]}"
        repeated = {i: n for i, n in stored.items() if n > 1}
        assert not repeated, f"{len(repeated)} events are stored more than once, e.g. {list(repeated.items())[:5]}"
        unknown = set(stored) - self.acknowledged - self.unsure
        assert not unknown, f"events that were never sent are stored: {sorted(unknown)[:5]}"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start `crucible serve` on the test's data dir; what is still running at the end is killed."""
    with serve_processes(tmp_path) as make:

        def start(*extra: str, env: dict[str, str] | None = None, wait_ready: bool = True) -> ServerProcess:
            return make(free_port(), *extra, env=env).start(wait_ready=wait_ready)

        yield start


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    """A session authenticated with an admin key of the test's data dir."""
    secret = await admin_secret(make_settings(tmp_path / "data"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), headers=bearer(secret)) as session:
        yield session


# -- tests ---------------------------------------------------------------------------------


async def test_acknowledged_batches_survive_a_sigkill(serve: Any, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    # A short flush: the writer inserts and commits while batches arrive, so the kill
    # finds records committed, records read but not committed, and records not read.
    server = serve("--writer-flush-seconds", "0.05")
    sender = Sender(http, server, "exp_durable")
    target = 60  # batches acknowledged before the kill
    acknowledged = 0

    async def send(worker: int) -> None:
        nonlocal acknowledged
        for n in range(target):
            if acknowledged >= target:
                return
            if not await sender.post([f"evt_{worker}_{n}_{i}" for i in range(50)]):
                return
            acknowledged += 1
            if acknowledged == target:
                server.kill()  # right after the last 202, with other batches in flight

    await asyncio.gather(*(send(w) for w in range(4)))
    assert server.process is not None and server.process.returncode == -9
    # Answers already on their way when the process died count too: those batches are acknowledged.
    assert len(sender.acknowledged) >= target * 50

    restarted = serve()
    await wait_caught_up(tmp_path / "data")
    stored = await stored_ids(http, restarted.url, "exp_durable")
    sender.check_stored(stored)
    assert await count(http, restarted.url, experiment_id="exp_durable") == sum(stored.values())


async def test_a_writer_crash_between_insert_and_commit_stores_each_event_once(
    serve: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    # A long flush, so that every batch below is in the writer's first insert.
    crashing = serve("--writer-flush-seconds", "2", env={CRASH_AFTER_INSERT_ENV: "1"})
    sender = Sender(http, crashing, "exp_crash")
    for n in range(20):
        if not await sender.post([f"evt_{n}_{i}" for i in range(25)]):
            break
    assert sender.acknowledged
    assert await asyncio.to_thread(crashing.wait_exit, 60) == 3

    # The crash left rows in the warehouse whose log records are not committed.
    end, committed = log_positions(data_dir)
    assert committed < end
    client = clickhouse_connect.get_client(interface="chdb", path=str(data_dir / "warehouse"))
    try:
        inserted = client.query("SELECT count() FROM telemetry_events").result_rows[0][0]
    finally:
        client.close()
    assert inserted > 0

    restarted = serve(env={CRASH_AFTER_INSERT_ENV: ""})
    await wait_caught_up(data_dir)
    stored = await stored_ids(http, restarted.url, "exp_crash")
    sender.check_stored(stored)
    assert await count(http, restarted.url) == sum(stored.values())
    if not sender.unsure:
        assert await count(http, restarted.url) == len(sender.acknowledged)


MODELS = ("gpt-small", "gpt-medium", "gpt-large")
START = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def replay_events(batch: int) -> list[dict[str, Any]]:
    """Events over 30 minutes (six 5-minute buckets) and three models; values that add up exactly."""
    events = []
    for i in range(100):
        n = batch * 100 + i
        extra: dict[str, Any] = {
            "timestamp": (START + dt.timedelta(seconds=(n * 7) % 1800)).isoformat(),
            "measurements": {"duration_ms": 0.5 * ((n * 37) % 400)},
        }
        if n % 10 == 0:
            extra["measurements"] = {"tokens": 3.0}  # no duration_ms: left out, not 0
        e = event(f"evt_replay_{n}", f"exp_{n % 4}", **extra)
        e["metadata"]["model"] = MODELS[n % 3]
        events.append(e)
    return events


async def aggregates(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    found = {}
    for agg in ("count", "sum", "p50", "p95", "p99"):
        params = {"agg": agg, "interval": "5m", "group_by": "model"}
        if agg != "count":
            params["metric"] = "duration_ms"
        async with session.get(url + AGGREGATE_URL, params=params) as answer:
            assert answer.status == 200, await answer.text()
            found[agg] = (await answer.json())["data"]
    return found


async def test_replaying_the_log_into_an_empty_warehouse_gives_the_same_aggregates(
    serve: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = serve()
    sent: list[dict[str, Any]] = []
    for batch in range(12):
        events = replay_events(batch)
        async with http.post(server.url + EVENTS_URL, json={"events": events}) as answer:
            assert answer.status == 202, await answer.text()
        sent.extend(events)
    await wait_caught_up(data_dir)
    before = await aggregates(http, server.url)

    # The aggregates are the events' own: counts add up, percentiles are numpy's.
    assert sum(p["count"] for p in before["count"]) == len(sent)
    assert len(before["p95"]) == len(MODELS) * 6
    durations = [e["measurements"]["duration_ms"] for e in sent if "duration_ms" in e["measurements"]]
    assert sum(p["value"] for p in before["sum"]) == sum(durations)
    large_first_bucket = [
        e["measurements"]["duration_ms"]
        for e in sent
        if e["metadata"]["model"] == "gpt-large"
        and "duration_ms" in e["measurements"]
        and dt.datetime.fromisoformat(e["timestamp"]) < START + dt.timedelta(minutes=5)
    ]
    [point] = [p for p in before["p95"] if p["group"] == "gpt-large" and p["timestamp"].startswith("2025-03-01T12:00")]
    assert point["count"] == len(large_first_bucket)
    assert point["value"] == pytest.approx(float(np.percentile(large_first_bucket, 95)))

    server.stop()
    assert server.process is not None and server.process.returncode == 0
    shutil.rmtree(data_dir / "warehouse")
    with contextlib.closing(sqlite3.connect(data_dir / "log.sqlite3")) as db, db:
        db.execute("DELETE FROM group_offsets WHERE group_id = ?", (WAREHOUSE_GROUP,))
    assert log_positions(data_dir)[1] == 0

    replayed = serve()
    await wait_caught_up(data_dir)
    assert await aggregates(http, replayed.url) == before
