"""The Kafka deployment against a real Kafka-protocol broker (tansu), never a mock.

Two kinds of tests:

- `KafkaLog` itself, on the session's broker (`kafka_bootstrap`), except topic
  creation, which needs a broker where the topics are missing.
- `crucible serve` / `crucible writer` as child processes. The warehouse group
  (`crucible-warehouse`) is fixed and the telemetry topic carries every earlier
  test's records, so each of these tests gets a broker of its own: its group
  starts empty and its offsets at 0, which makes "every record committed"
  checkable as "the group's committed offsets add up to the records appended".

Against tansu the producer runs without idempotence (tansu fails InitProducerId),
and nothing here reads lag from `end_offsets` (tansu gets it wrong for
multi-record batches): progress is the group's committed offsets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from service.log.interface import (
    TELEMETRY_DLQ_TOPIC,
    TELEMETRY_TOPIC,
    WAREHOUSE_GROUP,
    Record,
    StoredRecord,
    TopicPartition,
)
from service.log.kafka import KafkaLog
from tests.kafka_support import EVENTS_URL, GROUP_TIMEOUT, kafka_args, wait_committed
from tests.support import Http, ServerProcess, eventually, tansu_broker

pytestmark = pytest.mark.kafka

AGGREGATE_URL = "/api/v1/telemetry/aggregate"


# -- helpers -------------------------------------------------------------------------------


def kafka_log(bootstrap: str, partitions: int = 3) -> KafkaLog:
    """A KafkaLog as the tests run it on tansu: no idempotent producer."""
    return KafkaLog(bootstrap, telemetry_partitions=partitions, idempotence=False, request_timeout=10.0)


def event(experiment_id: str, index: int) -> dict[str, Any]:
    return {
        "event_name": ["crucible", "model", "inference"],
        "measurements": {"duration_ms": 1.0 + index},
        "metadata": {"experiment_id": experiment_id, "model": "gpt-test"},
    }


def batch(experiment_ids: list[str], per_experiment: int) -> dict[str, Any]:
    return {"events": [event(e, i) for e in experiment_ids for i in range(per_experiment)]}


async def read_until(
    consumer: Any, wanted: int, key: bytes, timeout: float = GROUP_TIMEOUT
) -> dict[TopicPartition, list[StoredRecord]]:
    """Read until `wanted` records with `key` were seen (other tests' records are skipped)."""
    seen: dict[TopicPartition, list[StoredRecord]] = {}

    async def enough() -> bool:
        for tp, records in (await consumer.getmany(timeout=0.5, max_records=500)).items():
            if mine := [r for r in records if r.key == key]:
                seen.setdefault(tp, []).extend(mine)
        return sum(len(r) for r in seen.values()) >= wanted

    await eventually(enough, timeout=timeout, interval=0)
    return seen


class Ingest:
    """Posts batches to a running API and keeps count of what it accepted."""

    def __init__(self, session: Http, url: str) -> None:
        self.session = session
        self.url = url
        self.accepted: Counter[str] = Counter()  # events per experiment_id
        self.records = 0  # log records appended: one per accepted batch and experiment
        self.replays = 0  # answers repeated for a known Idempotency-Key (nothing appended)

    async def post(self, body: dict[str, Any], idempotency_key: str | None = None) -> int:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        async with self.session.post(self.url + EVENTS_URL, json=body, headers=headers) as answer:
            payload = await answer.json()
            if answer.headers.get("Idempotent-Replayed") == "true":
                self.replays += 1
            elif answer.status == 202:
                assert payload["data"]["accepted"] == len(body["events"])
                experiments = Counter(e["metadata"]["experiment_id"] for e in body["events"])
                self.accepted.update(experiments)
                self.records += len(experiments)
            return answer.status

    @property
    def total(self) -> int:
        return sum(self.accepted.values())


async def counts_by_experiment(session: Http, url: str) -> dict[str, int]:
    params = {"agg": "count", "group_by": "experiment_id"}
    async with session.get(url + AGGREGATE_URL, params=params) as answer:
        assert answer.status == 200, await answer.text()
        return {p["group"]: p["count"] for p in (await answer.json())["data"]}


def warehouse_counts(data_dir: Path) -> dict[str, int]:
    """Rows per experiment in a data dir's chDB, read from this process (its owner has exited)."""
    client = clickhouse_connect.get_client(interface="chdb", path=str(data_dir / "warehouse"))
    try:
        rows = client.query(
            "SELECT experiment_id, count(), uniqExact(id) FROM telemetry_events GROUP BY experiment_id"
        ).result_rows
    finally:
        client.close()
    for experiment_id, count, unique in rows:
        assert count == unique, f"{experiment_id}: {count} rows for {unique} event ids"
    return {experiment_id: count for experiment_id, count, _ in rows}


async def has_inserted(session: Http, server: ServerProcess) -> bool:
    """Whether a writer inserted rows yet, by its crucible_warehouse_rows_inserted_total (/metrics)."""
    async with session.get(server.url + "/metrics") as answer:
        for line in (await answer.text()).splitlines():
            if line.startswith("crucible_warehouse_rows_inserted_total "):
                return float(line.split()[1]) > 0
    return False


# -- KafkaLog ----------------------------------------------------------------------------


async def test_start_creates_missing_topics_with_the_configured_partitions(own_broker: str) -> None:
    log = kafka_log(own_broker, partitions=4)
    await log.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=own_broker)
    await admin.start()
    try:
        assert {TELEMETRY_TOPIC, TELEMETRY_DLQ_TOPIC} <= set(await admin.list_topics())
        described = {t["topic"]: t for t in await admin.describe_topics([TELEMETRY_TOPIC])}
        assert len(described[TELEMETRY_TOPIC]["partitions"]) == 4
        # Starting again on existing topics changes nothing and fails nothing.
        again = kafka_log(own_broker, partitions=2)
        await again.start()
        await again.stop()
        described = {t["topic"]: t for t in await admin.describe_topics([TELEMETRY_TOPIC])}
        assert len(described[TELEMETRY_TOPIC]["partitions"]) == 4
        assert await log.ping()
    finally:
        await admin.close()
        await log.stop()


async def test_append_returns_positions_and_a_key_keeps_its_partition(kafka_bootstrap: str) -> None:
    log = kafka_log(kafka_bootstrap)
    await log.start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            partitions = len((await admin.describe_topics([TELEMETRY_TOPIC]))[0]["partitions"])
        finally:
            await admin.close()
        run = uuid.uuid4().hex
        keys = [f"exp_{run}_{i}".encode() for i in range(16)]
        first = await log.append([Record(TELEMETRY_TOPIC, k, b'{"n":1}') for k in keys])
        second = await log.append([Record(TELEMETRY_TOPIC, k, b'{"n":2}') for k in keys])
        assert len(first) == len(second) == len(keys)
        for (p1, o1), (p2, o2) in zip(first, second, strict=True):
            assert 0 <= p1 < partitions and o1 >= 0
            assert p2 == p1, "a key moved to another partition"
            assert o2 > o1, "a later append of a key got an earlier offset"
        # Offsets within a partition are distinct and increasing in append order.
        by_partition: dict[int, list[int]] = {}
        for partition, offset in first + second:
            by_partition.setdefault(partition, []).append(offset)
        for offsets in by_partition.values():
            assert offsets == sorted(set(offsets))
        if partitions > 1:
            assert len(by_partition) > 1, "16 keys all hashed to one partition"
        # That the positions are where the records really are: see the next test.
    finally:
        await log.stop()


async def test_positions_give_each_partition_its_end_and_a_group_commit_without_joining(own_broker: str) -> None:
    log = kafka_log(own_broker, partitions=3)
    await log.start()
    try:
        assert [p.committed for p in await log.positions(TELEMETRY_TOPIC, WAREHOUSE_GROUP)] == [None] * 3
        appended = await log.append([Record(TELEMETRY_TOPIC, f"exp_{i}".encode(), b"{}") for i in range(12)])
        consumer = await log.consumer(WAREHOUSE_GROUP, [TELEMETRY_TOPIC])
        try:
            await read_until(consumer, 1, b"exp_0")  # the group has joined and owns every partition
            await consumer.commit({TopicPartition(TELEMETRY_TOPIC, 0): 1})
        finally:
            await consumer.stop()
        positions = await log.positions(TELEMETRY_TOPIC, WAREHOUSE_GROUP)
        assert [p.partition for p in positions] == [0, 1, 2]
        assert [p.committed for p in positions] == [1, None, None]
        # Each partition has an end; tansu's is not checked against the appends, since it
        # counts a batch of several records as one (see the module docstring).
        assert all(p.end is not None and p.end >= 1 for p in positions if any(q == p.partition for q, _ in appended))
    finally:
        await log.stop()


async def test_a_group_resumes_from_its_commit_after_being_recreated(kafka_bootstrap: str) -> None:
    log = kafka_log(kafka_bootstrap)
    await log.start()
    group = f"test-resume-{uuid.uuid4().hex}"
    key = f"exp_{uuid.uuid4().hex}".encode()
    try:
        positions = await log.append([Record(TELEMETRY_TOPIC, key, b"%d" % i) for i in range(6)])
        partition = positions[0][0]
        tp = TopicPartition(TELEMETRY_TOPIC, partition)

        consumer = await log.consumer(group, [TELEMETRY_TOPIC])
        try:
            seen = await read_until(consumer, 6, key)
            assert [r.offset for r in seen[tp]] == [o for _, o in positions]
            # Commit the next offset after the third record: three are processed.
            await consumer.commit({tp: positions[2][1] + 1})
            assert await consumer.committed(tp) == positions[2][1] + 1
        finally:
            await consumer.stop()

        later = await log.append([Record(TELEMETRY_TOPIC, key, b"%d" % i) for i in range(6, 8)])
        assert all(p == partition for p, _ in later)

        again = await log.consumer(group, [TELEMETRY_TOPIC])
        try:
            seen = await read_until(again, 5, key)
            assert await again.committed(tp) == positions[2][1] + 1
        finally:
            await again.stop()
        # Records 3..7: nothing before the commit comes back, nothing after it is lost.
        assert [r.value for r in seen[tp]] == [b"3", b"4", b"5", b"6", b"7"]
        assert [r.offset for r in seen[tp]] == [o for _, o in positions[3:] + later]
    finally:
        await log.stop()


# -- crucible serve / crucible writer over Kafka ------------------------------------------


async def test_serve_stores_every_accepted_event_exactly_once(
    own_broker: str, servers: Any, http: Http, tmp_path: Path
) -> None:
    partitions = 4
    server = servers("serve", kafka_args("serve", own_broker, tmp_path / "data", partitions))
    ingest = Ingest(http, server.url)
    experiments = [f"exp_{i}" for i in range(8)]

    async def producer(worker: int) -> None:
        for n in range(6):
            mine = [experiments[(worker + n + k) % 8] for k in range(3)]
            assert await ingest.post(batch(mine, 10)) == 202

    await asyncio.gather(*(producer(w) for w in range(4)))
    # A retried batch (same Idempotency-Key) is answered again and stored once.
    assert await ingest.post(batch(["exp_retry"], 5), idempotency_key="retry-1") == 202
    assert await ingest.post(batch(["exp_retry"], 5), idempotency_key="retry-1") == 202
    assert ingest.replays == 1

    await wait_committed(own_broker, partitions, ingest.records)
    assert await counts_by_experiment(http, server.url) == dict(ingest.accepted)
    async with http.get(server.url + AGGREGATE_URL, params={"agg": "count"}) as answer:
        [point] = (await answer.json())["data"]
    assert point["count"] == ingest.total


async def test_writer_alone_stores_what_the_api_alone_appended(
    own_broker: str, servers: Any, http: Http, tmp_path: Path
) -> None:
    partitions = 3
    api = servers("api", kafka_args("serve", own_broker, tmp_path / "api", partitions, "--no-writer"))
    writer = servers("writer", kafka_args("writer", own_broker, tmp_path / "writer", partitions))
    ingest = Ingest(http, api.url)
    for n in range(10):
        assert await ingest.post(batch([f"exp_{n % 4}", "exp_all"], 20)) == 202
    # The API process has no writer: /readyz says so, and nothing reaches its warehouse.
    async with http.get(api.url + "/readyz") as answer:
        assert (await answer.json())["data"]["checks"]["writer"] is None

    await wait_committed(own_broker, partitions, ingest.records)
    writer.stop()
    assert writer.wait_exit(30) == 0
    assert warehouse_counts(tmp_path / "writer") == dict(ingest.accepted)
    async with http.get(api.url + AGGREGATE_URL, params={"agg": "count"}) as answer:
        assert (await answer.json())["data"] == []


async def test_two_writers_share_the_partitions_and_store_each_event_once(
    own_broker: str, servers: Any, http: Http, tmp_path: Path
) -> None:
    partitions = 6
    api_args = kafka_args("serve", own_broker, tmp_path / "api", partitions, "--no-writer")
    first_args = kafka_args("writer", own_broker, tmp_path / "writer-1", partitions)
    api, first = await asyncio.gather(
        asyncio.to_thread(servers, "api", api_args), asyncio.to_thread(servers, "writer-1", first_args)
    )
    ingest = Ingest(http, api.url)
    experiments = [f"exp_{i}" for i in range(24)]  # keys on every partition
    posted = 0
    stop_posting = asyncio.Event()

    async def keep_posting() -> None:
        nonlocal posted
        while not stop_posting.is_set():
            assert await ingest.post(batch(experiments[posted % 3 :: 3], 4)) == 202
            posted += 1
            await asyncio.sleep(0.05)

    poster = asyncio.create_task(keep_posting())
    try:
        # The first writer owns every partition and is inserting when the second one
        # joins: the group rebalances while events keep coming.
        await eventually(lambda: has_inserted(http, first), timeout=GROUP_TIMEOUT)
        second_args = kafka_args("writer", own_broker, tmp_path / "writer-2", partitions)
        second = await asyncio.to_thread(servers, "writer-2", second_args)
        await eventually(lambda: has_inserted(http, second), timeout=GROUP_TIMEOUT)
        await asyncio.sleep(0.5)  # both writers take events for a while
    finally:
        stop_posting.set()
        await poster

    await wait_committed(own_broker, partitions, ingest.records)
    for writer in (first, second):
        writer.stop()
        assert writer.wait_exit(30) == 0
    one, two = warehouse_counts(tmp_path / "writer-1"), warehouse_counts(tmp_path / "writer-2")
    assert sum(one.values()) > 0 and sum(two.values()) > 0
    assert sum(one.values()) + sum(two.values()) == ingest.total
    assert Counter(one) + Counter(two) == ingest.accepted


async def test_a_broker_that_is_down_answers_503_with_retry_after(servers: Any, http: Http, tmp_path: Path) -> None:
    with tansu_broker() as bootstrap:
        args = kafka_args("serve", bootstrap, tmp_path / "data", 2, "--no-writer", "--kafka-request-timeout", "2")
        server = servers("serve", args)
        ingest = Ingest(http, server.url)
        assert await ingest.post(batch(["exp_1"], 3)) == 202
    # The broker is gone now.
    async with http.post(server.url + EVENTS_URL, json=batch(["exp_1"], 3)) as answer:
        assert answer.status == 503
        retry_after = answer.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
        body = await answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "unavailable"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    async with http.get(server.url + "/readyz") as answer:
        assert answer.status == 503
        assert (await answer.json())["data"]["checks"]["log"] is False


# -- backpressure ------------------------------------------------------------------------


async def backpressure_waits(session: Http, server: ServerProcess) -> float:
    """Seconds this API process's batches have waited for the writers (its /metrics)."""
    async with session.get(server.url + "/metrics") as answer:
        for line in (await answer.text()).splitlines():
            if line.startswith("crucible_ingest_backpressure_seconds_sum "):
                return float(line.split()[1])
    return 0.0


async def test_an_api_process_waits_for_the_writers_group_then_appends_anyway(
    own_broker: str, servers: Any, http: Http, tmp_path: Path
) -> None:
    """On Kafka the writers are other processes: an API process reads their group's commits
    and holds a batch back while its own events they have not stored exceed the limit."""
    lag_flags = ("--ingest-max-writer-lag-events", "1", "--ingest-max-backpressure-seconds", "0.5")
    api = servers("api", kafka_args("serve", own_broker, tmp_path / "api", 3, "--no-writer", *lag_flags))
    ingest = Ingest(http, api.url)
    # No writer runs: the first batch finds nothing behind, the next ones wait 0.5 s each.
    assert await ingest.post(batch(["exp_1"], 2)) == 202
    assert await backpressure_waits(http, api) == 0
    started = time.monotonic()
    assert await ingest.post(batch(["exp_1"], 1)) == 202
    assert time.monotonic() - started >= 0.5
    assert await backpressure_waits(http, api) >= 0.5
    # With a writer storing everything, the lag is gone and a batch goes straight on.
    servers("writer", kafka_args("writer", own_broker, tmp_path / "writer", 3))
    await wait_committed(own_broker, 3, ingest.records)

    async def goes_straight_on() -> bool:  # once this process has read the group's commits
        started = time.monotonic()
        assert await ingest.post(batch(["exp_2"], 1)) == 202
        await wait_committed(own_broker, 3, ingest.records)
        return time.monotonic() - started < 0.5

    await eventually(goes_straight_on, timeout=GROUP_TIMEOUT)
