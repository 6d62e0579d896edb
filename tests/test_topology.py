"""The distributed deployment on one machine, as deploy/compose.yaml runs it: a Kafka-protocol
broker (tansu), a ClickHouse HTTP endpoint (chDB, tests/clickhouse_endpoint.py),
`crucible migrate --clickhouse`, two `crucible serve --no-writer` API processes and two
`crucible writer` processes, checkpoint files in one S3-compatible store (moto).

Everything a user does goes through both API processes; then processes are killed
(a writer, an API process, the ClickHouse endpoint) and nothing acknowledged is lost or
stored twice. Counts are read from the endpoint's chDB directly, by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.kafka_support import EVENTS_URL, GROUP_TIMEOUT
from tests.live_support import PhoenixClient
from tests.support import ServerProcess, TansuBroker, eventually, tansu_broker
from tests.topology_support import (
    AGGREGATE_URL,
    KEYED_PREFIX,
    PARTITIONS,
    KeyedIngest,
    Topology,
    build,
    durable_broker,
    events,
    post,
    s3_store,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, dict[str, str]]]:
    with s3_store() as store:
        yield store


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, s3: tuple[str, dict[str, str]]) -> Iterator[Topology]:
    with tansu_broker() as broker:
        built = build(tmp_path_factory.mktemp("topology"), broker, s3)
        try:
            yield built
        finally:
            built.stop()


@pytest.fixture
async def session(topology: Topology) -> Any:
    headers = {"Authorization": f"Bearer {topology.admin}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), headers=headers) as session:
        yield session


async def count_through(session: Any, api: ServerProcess, experiment_id: str) -> int:
    params = {"agg": "count", "filter[experiment_id]": experiment_id}
    async with session.get(api.url + AGGREGATE_URL, params=params) as answer:
        assert answer.status == 200, await answer.text()
        points = (await answer.json())["data"]
        return int(sum(p["count"] for p in points))


async def visible_everywhere(session: Any, topology: Topology, experiment_id: str, expected: int) -> None:
    async def all_see_it() -> bool:
        counts = [await count_through(session, api, experiment_id) for api in topology.apis]
        assert all(c <= expected for c in counts), counts
        return counts == [expected] * len(topology.apis)

    await eventually(all_see_it, timeout=GROUP_TIMEOUT, interval=0.2)


async def create_experiment(session: Any, api: ServerProcess, name: str) -> str:
    async with session.post(api.url + "/api/v1/experiments", json={"experiment": {"name": name}}) as answer:
        assert answer.status == 201, await answer.text()
        return str((await answer.json())["data"]["id"])


# -- what a user does, through both API processes ---------------------------------------


async def test_ingest_through_either_process_is_stored_once_and_read_through_both(
    topology: Topology, session: Any
) -> None:
    one, two = topology.apis
    assert await post(session, one, events("exp_both", 300)) == 202
    assert await post(session, two, events("exp_both", 200)) == 202
    # A retry reaching the other process is appended again and dropped by the writers.
    body = events("exp_both", 100, run="retried")
    assert await post(session, one, body, key="retry-1") == 202
    assert await post(session, two, body, key="retry-1") == 202
    await visible_everywhere(session, topology, "exp_both", 600)
    async with session.get(two.url + AGGREGATE_URL, params={
        "agg": "p99", "metric": "latency_ms", "group_by": "model", "filter[experiment_id]": "exp_both"
    }) as answer:  # fmt: skip
        groups = {p["group"]: p["value"] for p in (await answer.json())["data"]}
    assert set(groups) == {"a", "b"}


async def test_event_pages_walk_the_shared_warehouse(topology: Topology, session: Any) -> None:
    one, two = topology.apis
    assert await post(session, one, events("exp_pages", 45)) == 202
    await visible_everywhere(session, topology, "exp_pages", 45)
    seen: list[str] = []
    params: dict[str, Any] = {"filter[experiment_id]": "exp_pages", "per_page": 10}
    while True:
        async with session.get(two.url + EVENTS_URL, params=params) as answer:
            body = await answer.json()
        seen += [e["id"] for e in body["data"]]
        if not body["meta"].get("next_cursor"):
            break
        params["cursor"] = body["meta"]["next_cursor"]
    assert len(seen) == len(set(seen)) == 45


async def test_a_command_raced_on_both_processes_has_one_winner(topology: Topology, session: Any) -> None:
    one, two = topology.apis
    experiment_id = await create_experiment(session, one, "raced")

    async def known_to_two() -> bool:
        async with session.get(f"{two.url}/api/v1/experiments/{experiment_id}") as answer:
            return answer.status == 200

    await eventually(known_to_two, timeout=10)

    async def start(api: ServerProcess) -> int:
        async with session.post(f"{api.url}/api/v1/experiments/{experiment_id}/start") as answer:
            return answer.status

    assert sorted(await asyncio.gather(start(one), start(two))) == [200, 409]


async def test_a_key_revoked_on_one_process_is_refused_by_the_other_within_a_second(
    topology: Topology, session: Any
) -> None:
    one, two = topology.apis
    async with session.post(one.url + "/api/v1/api-keys", json={"api_key": {"name": "t", "scopes": ["read"]}}) as a:
        assert a.status == 201, await a.text()
        created = (await a.json())["data"]
    reader = {"Authorization": f"Bearer {created['secret']}"}

    async def status_on(api: ServerProcess) -> int:
        async with session.get(api.url + "/api/v1/experiments", headers=reader) as answer:
            return answer.status

    for api in (one, two):  # the key reached both processes' folds
        await eventually(lambda api=api: _equals(status_on(api), 200), timeout=10)
    async with session.delete(f"{two.url}/api/v1/api-keys/{created['id']}") as answer:
        assert answer.status == 204, await answer.text()
    revoked = time.monotonic()
    await eventually(lambda: _equals(status_on(one), 401), timeout=5, interval=0.05)
    assert time.monotonic() - revoked < 1.0


async def _equals(status: Any, wanted: int) -> bool:
    return bool(await status == wanted)


async def test_a_live_channel_on_one_process_sees_ingest_on_the_other(topology: Topology, session: Any) -> None:
    one, two = topology.apis
    url = f"{one.url}/socket/websocket?token={topology.admin}&vsn=2.0.0"
    async with session.ws_connect(url) as ws:
        client = PhoenixClient(ws)
        _, reply = await client.join("telemetry:exp_live")
        assert reply.payload["status"] == "ok", reply
        assert await post(session, two, events("exp_live", 3)) == 202
        pushed = await client.push("telemetry:exp_live", "event")
        assert pushed.payload["metadata"]["experiment_id"] == "exp_live"


async def test_a_checkpoint_uploaded_to_one_process_downloads_from_the_other(topology: Topology, session: Any) -> None:
    one, two = topology.apis
    experiment_id = await create_experiment(session, one, "checkpoints")
    run_started = {
        "event_name": ["crucible", "run", "started"],
        "metadata": {"experiment_id": experiment_id, "run_id": "run_ckpt"},
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
    }
    assert await post(session, one, {"events": [run_started]}) == 202

    async def run_known_to(api: ServerProcess) -> bool:
        async with session.get(f"{api.url}/api/v1/runs/run_ckpt") as answer:
            return answer.status == 200

    await eventually(lambda: run_known_to(one), timeout=10)
    data = b"weights" * 100_000
    async with session.put(f"{one.url}/api/v1/runs/run_ckpt/checkpoints/epoch-1", data=data) as answer:
        assert answer.status == 201, await answer.text()

    # The other process learns of the upload from the log: it may know the run before it
    # has folded the upload, so wait for the upload itself.
    async def upload_known_to(api: ServerProcess) -> bool:
        async with session.get(f"{api.url}/api/v1/runs/run_ckpt/checkpoints") as answer:
            found = (await answer.json())["data"] if answer.status == 200 else []
        return any(c["id"] == "epoch-1" and c.get("sha256") for c in found)

    await eventually(lambda: upload_known_to(two), timeout=10)
    async with session.get(f"{two.url}/api/v1/runs/run_ckpt/checkpoints/epoch-1/download") as answer:
        assert answer.status == 200, await answer.text()
        assert hashlib.sha256(await answer.read()).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_exports_and_statistics_read_the_shared_warehouse(topology: Topology, session: Any) -> None:
    one, two = topology.apis
    experiment_id = await create_experiment(session, two, "read side")
    assert await post(session, one, events(experiment_id, 120)) == 202
    await visible_everywhere(session, topology, experiment_id, 120)
    export = {"format": "csv", "filters": {"experiment_id": experiment_id}, "fields": ["id", "timestamp"]}
    async with session.post(two.url + "/api/v1/telemetry/export", json=export) as answer:
        assert answer.status == 200, await answer.text()
        assert len((await answer.read()).splitlines()) == 121  # a header line, then the rows
    test = {
        "test": {
            "experiment_id": experiment_id,
            "test_type": "welch_t_test",
            "metric": "latency_ms",
            "groups": ["a", "b"],
            "options": {"group_by": "model"},
        }
    }
    async with session.post(one.url + "/api/v1/statistical-results", json=test) as answer:
        assert answer.status == 201, await answer.text()


async def test_status_shows_each_partition_the_writers_and_what_the_warehouse_holds(
    topology: Topology, session: Any
) -> None:
    assert await post(session, topology.apis[0], events("exp_status", 40)) == 202
    await visible_everywhere(session, topology, "exp_status", 40)
    command = [sys.executable, "-m", "service", "status", "--json", "--kafka", topology.broker]
    command += ["--kafka-partitions", str(PARTITIONS), "--no-kafka-idempotence"]
    command += ["--clickhouse", topology.clickhouse.url, "--data-dir", str(topology.root / "status")]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert [p["partition"] for p in status["partitions"]] == list(range(PARTITIONS))
    assert len(status["writers"]) == 2 and status["log_error"] is None and status["warehouse_error"] is None
    rows, _ = await asyncio.to_thread(topology.stored)
    assert sum(p["stored_rows"] for p in status["partitions"]) == rows
    async with session.get(topology.apis[1].url + "/readyz", params={"detail": "true"}) as answer:
        detail = (await answer.json())["data"]["pipeline"]
    assert len(detail["partitions"]) == PARTITIONS and len(detail["writers"]) == 2


# -- faults ------------------------------------------------------------------------------


async def ready(session: Any, server: ServerProcess) -> tuple[int, dict[str, Any]]:
    async with session.get(server.url + "/readyz") as answer:
        return answer.status, (await answer.json())["data"]["checks"]


async def test_killed_writers_api_processes_and_warehouse_lose_nothing_and_store_nothing_twice(
    tmp_path: Path, s3: tuple[str, dict[str, str]]
) -> None:
    with tansu_broker() as broker:
        topology = build(tmp_path, broker, s3)
        headers = {"Authorization": f"Bearer {topology.admin}"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), headers=headers) as session:
                ingest = KeyedIngest(session, topology)
                sender = asyncio.create_task(ingest.run())
                try:
                    await _kill_and_replace_a_writer(topology, ingest)
                    await _kill_the_warehouse(topology, session, ingest)
                    await _kill_and_replace_an_api_process(topology, ingest)
                finally:
                    ingest.stop()
                    await sender

                async def all_stored() -> bool:
                    rows, ids = await asyncio.to_thread(topology.stored)
                    assert rows == ids, f"{rows - ids} events stored twice"
                    return ids == len(ingest.acknowledged)

                await eventually(all_stored, timeout=GROUP_TIMEOUT * 2, interval=0.5)
                assert ingest.refusals > 0  # the outages were seen, and retried
        finally:
            topology.stop()


async def test_a_killed_broker_started_again_on_its_storage_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, s3: tuple[str, dict[str, str]]
) -> None:
    broker = durable_broker(s3).start()
    topology = build(tmp_path, broker.address, s3)
    headers = {"Authorization": f"Bearer {topology.admin}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), headers=headers) as session:
            ingest = KeyedIngest(session, topology)
            sender = asyncio.create_task(ingest.run())
            try:
                await _acknowledged_more(ingest, 500)
                broker.kill()
                api = topology.apis[1]

                async def log_down() -> bool:
                    status, checks = await ready(session, api)
                    return status == 503 and checks["log"] is False

                await eventually(log_down, timeout=20)
                started = time.monotonic()
                async with session.post(api.url + EVENTS_URL, json=events("exp_outage", 5)) as answer:
                    assert answer.status == 503, await answer.text()
                    assert "Retry-After" in answer.headers
                assert time.monotonic() - started < 15, "an append during the outage hung"
                broker.start()

                async def log_back() -> bool:
                    return all([(await ready(session, each))[0] == 200 for each in topology.apis])

                await eventually(log_back, timeout=GROUP_TIMEOUT)
                await _acknowledged_more(ingest, 500)
            finally:
                ingest.stop()
                await sender

            async def all_stored() -> bool:
                rows, ids = await asyncio.to_thread(topology.stored, f"evt_{KEYED_PREFIX}")
                assert rows == ids, f"{rows - ids} events stored twice"
                return ids == len(ingest.acknowledged)

            await eventually(all_stored, timeout=GROUP_TIMEOUT * 2, interval=0.5)
            assert ingest.refusals > 0
    finally:
        topology.stop()
        broker.stop()


async def test_writers_stop_and_say_so_when_the_broker_comes_back_without_its_topics(
    tmp_path: Path, s3: tuple[str, dict[str, str]]
) -> None:
    """tansu on memory storage keeps nothing: started again, it makes the topic anew on the
    next append, at offset 0, below what the writers read and the warehouse holds."""
    broker = TansuBroker().start()
    topology = build(tmp_path, broker.address, s3)
    headers = {"Authorization": f"Bearer {topology.admin}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60), headers=headers) as session:
            for n in range(8):
                assert await post(session, topology.apis[n % 2], events(f"exp_before_{n}", 50)) == 202
            await visible_everywhere(session, topology, "exp_before_7", 50)
            url = f"{topology.apis[0].url}/socket/websocket?token={topology.admin}&vsn=2.0.0"
            async with session.ws_connect(url) as ws:
                live = PhoenixClient(ws)
                assert (await live.join("telemetry:exp_live_after"))[1].payload["status"] == "ok"
                broker.kill()
                broker.start()
                for n in range(8):
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        await asyncio.wait_for(post(session, topology.apis[n % 2], events(f"exp_after_{n}", 50)), 30)
                # The live tail follows the new log: what arrives from now on is pushed.
                for _ in range(30):
                    assert await post(session, topology.apis[1], events("exp_live_after", 1)) == 202
                    with contextlib.suppress(TimeoutError):
                        pushed = await asyncio.wait_for(live.push("telemetry:exp_live_after", "event"), 1.0)
                        break
                else:
                    raise AssertionError("no live push from the new log within 30 s")
                assert pushed.payload["metadata"]["experiment_id"] == "exp_live_after"

            async def writers_not_ready() -> bool:
                return all([(await ready(session, writer))[0] == 503 for writer in topology.writers])

            await eventually(writers_not_ready, timeout=GROUP_TIMEOUT)
            logs = "".join(writer.log.read_text() for writer in topology.writers if writer.log)
            assert "was created anew" in logs
            rows, ids = await asyncio.to_thread(topology.stored, "evt_")
            assert rows == ids  # nothing of the new log was taken for stored records
    finally:
        topology.stop()
        broker.stop()


async def _acknowledged_more(ingest: KeyedIngest, count: int) -> None:
    target = len(ingest.acknowledged) + count

    async def enough() -> bool:
        return len(ingest.acknowledged) >= target

    await eventually(enough, timeout=GROUP_TIMEOUT)


async def _kill_and_replace_a_writer(topology: Topology, ingest: KeyedIngest) -> None:
    await _acknowledged_more(ingest, 2000)
    topology.writers[0].kill()  # mid-batch: its partitions go to the other writer
    await _acknowledged_more(ingest, 2000)
    topology.writers[0] = topology.start("writer-3", topology.writer_args("writer-3"))


async def _kill_the_warehouse(topology: Topology, session: Any, ingest: KeyedIngest) -> None:
    await _acknowledged_more(ingest, 2000)
    topology.clickhouse.kill()
    api = topology.apis[0]

    async def warehouse_down() -> bool:
        status, checks = await ready(session, api)
        return status == 503 and checks["warehouse"] is False

    await eventually(warehouse_down, timeout=10)
    started = time.monotonic()
    async with session.get(api.url + AGGREGATE_URL, params={"agg": "count"}) as answer:
        assert answer.status == 503, await answer.text()
        assert "Retry-After" in answer.headers
    assert time.monotonic() - started < 10, "an answer during the outage hung"
    await _acknowledged_more(ingest, 1000)  # ingest goes on: the log holds the events
    topology.clickhouse.start()  # the same data directory and port

    async def warehouse_back() -> bool:
        return (await ready(session, api))[0] == 200

    await eventually(warehouse_back, timeout=30)


async def _kill_and_replace_an_api_process(topology: Topology, ingest: KeyedIngest) -> None:
    await _acknowledged_more(ingest, 1000)
    topology.apis[0].kill()  # its batches in flight are retried on the other process
    await _acknowledged_more(ingest, 2000)
    topology.apis[0] = topology.start("api-3", topology.api_args("api-3"))
    await _acknowledged_more(ingest, 1000)
