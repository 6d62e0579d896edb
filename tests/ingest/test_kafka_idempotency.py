"""A retried batch (same Idempotency-Key) is stored once on Kafka, whichever API process it reaches.

Each API process remembers only its own answers, so a retry sent to another one is
appended again; the warehouse writer drops it (service/warehouse/retry_window.py). These tests
run the deployment as a user would: `crucible serve --no-writer` API processes and a
`crucible writer` on a tansu broker of their own (see tests/log/test_kafka.py), and read
what the writer stored from its chDB once it has exited.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect
import pytest

from service.log.kafka import CRASH_AFTER_APPEND_ENV
from tests.kafka_support import EVENTS_URL, kafka_args, wait_committed
from tests.support import Http, ServerProcess, inference_batch

pytestmark = pytest.mark.kafka

PARTITIONS = 3


def per_experiment(body: dict[str, Any]) -> Counter[str]:
    return Counter(e["metadata"]["experiment_id"] for e in body["events"])


def stored_once(data_dir: Path) -> Counter[str]:
    """Events per experiment in a writer's chDB (read after the writer exited), once it is
    checked that no event id is stored twice."""
    client = clickhouse_connect.get_client(interface="chdb", path=str(data_dir / "warehouse"))
    try:
        rows = client.query("SELECT id, experiment_id, count() FROM telemetry_events GROUP BY id, experiment_id")
    finally:
        client.close()
    repeated = [(event_id, n) for event_id, _, n in rows.result_rows if n > 1]
    assert not repeated, f"{len(repeated)} event ids stored more than once, e.g. {repeated[:3]}"
    return Counter(experiment_id for _, experiment_id, _ in rows.result_rows)


class Poster:
    """Posts to API processes; counts the log records appended (one per batch and experiment)."""

    def __init__(self, session: Http) -> None:
        self.session = session
        self.statuses: Counter[int] = Counter()
        self.records = 0

    async def post(self, api: ServerProcess, body: dict[str, Any], key: str | None) -> int:
        headers = {"Idempotency-Key": key} if key else {}
        async with self.session.post(api.url + EVENTS_URL, json=body, headers=headers) as answer:
            await answer.read()
            self.statuses[answer.status] += 1
            # A replayed answer appended nothing; any other 202 appended the batch.
            if answer.status == 202 and answer.headers.get("Idempotent-Replayed") != "true":
                self.records += len({e["metadata"]["experiment_id"] for e in body["events"]})
            return answer.status


async def stop_and_read(writer: ServerProcess, data_dir: Path) -> Counter[str]:
    writer.stop()
    assert writer.wait_exit(30) == 0
    return stored_once(data_dir)


async def test_copies_of_a_batch_sent_to_two_api_processes_at_once_are_stored_once(
    own_broker: str, servers: Any, http: Http, tmp_path: Path
) -> None:
    api_args = [kafka_args("serve", own_broker, tmp_path / f"api-{n}", PARTITIONS, "--no-writer") for n in (1, 2)]
    writer_args = kafka_args("writer", own_broker, tmp_path / "writer", PARTITIONS)
    # The first start creates the admin key (and the topics) before the others start.
    api_1 = await asyncio.to_thread(servers, "api-1", api_args[0])
    api_2, writer = await asyncio.gather(
        asyncio.to_thread(servers, "api-2", api_args[1]), asyncio.to_thread(servers, "writer", writer_args)
    )
    apis = (api_1, api_2)
    poster = Poster(http)
    # Several experiments, so each attempt is several records; the large batch (~170 KB)
    # goes through the ingest worker process, the small one is decoded on the event loop.
    small = inference_batch(["exp_s1", "exp_s2", "exp_s3"], 4)
    large = inference_batch(["exp_l1", "exp_l2"], 250, padding=300)
    storm = [("small-" + uuid.uuid4().hex, small), ("large-" + uuid.uuid4().hex, large)]
    copies = 40

    others_done = asyncio.Event()
    expected = per_experiment(small) + per_experiment(large)

    async def other_clients(client: int) -> None:
        n = 0
        while not others_done.is_set():
            body = inference_batch([f"exp_other_{client}"], 5)
            key = f"other-{client}-{n}" if n % 2 else None
            assert await poster.post(apis[n % 2], body, key) == 202
            expected.update(per_experiment(body))
            n += 1

    others = [asyncio.create_task(other_clients(c)) for c in range(3)]
    try:
        attempts = [poster.post(apis[i % 2], body, key) for key, body in storm for i in range(copies)]
        statuses = await asyncio.gather(*attempts)
    finally:
        others_done.set()
        await asyncio.gather(*others)
    assert all(status < 500 for status in statuses), Counter(statuses)
    assert poster.statuses.keys() == {202}, poster.statuses

    await wait_committed(own_broker, PARTITIONS, poster.records)
    assert await stop_and_read(writer, tmp_path / "writer") == expected


async def test_a_retry_after_an_api_process_died_between_append_and_answer_is_stored_once(
    own_broker: str, servers: Any, http: Http, tmp_path: Path
) -> None:
    # The hook makes the first API process exit right after its append is durable,
    # before it remembers or answers: deterministic, unlike a kill timed from outside.
    crashing = await asyncio.to_thread(
        servers,
        "api-crashing",
        kafka_args("serve", own_broker, tmp_path / "api-1", PARTITIONS, "--no-writer"),
        env={CRASH_AFTER_APPEND_ENV: "1"},
    )
    api_2, writer = await asyncio.gather(
        asyncio.to_thread(
            servers, "api-2", kafka_args("serve", own_broker, tmp_path / "api-2", PARTITIONS, "--no-writer")
        ),
        asyncio.to_thread(servers, "writer", kafka_args("writer", own_broker, tmp_path / "writer", PARTITIONS)),
    )
    body = inference_batch(["exp_c1", "exp_c2"], 10)
    key = "crash-" + uuid.uuid4().hex
    poster = Poster(http)
    with pytest.raises(aiohttp.ClientError):
        await poster.post(crashing, body, key)
    assert crashing.wait_exit(30) == 3
    # The client saw no answer and retries with the same key, on another API process.
    assert await poster.post(api_2, body, key) == 202

    await wait_committed(own_broker, PARTITIONS, 2 * 2)  # both attempts are in the log
    assert await stop_and_read(writer, tmp_path / "writer") == per_experiment(body)


async def test_a_writer_that_takes_over_the_partitions_drops_a_batch_stored_before(
    own_broker: str, servers: Any, http: Http, tmp_path: Path
) -> None:
    api_1 = await asyncio.to_thread(
        servers, "api-1", kafka_args("serve", own_broker, tmp_path / "api-1", PARTITIONS, "--no-writer")
    )
    writer_args = kafka_args("writer", own_broker, tmp_path / "writer", PARTITIONS)
    first_writer = await asyncio.to_thread(servers, "writer-1", writer_args)
    body = inference_batch(["exp_t1", "exp_t2", "exp_t3"], 6)
    key = "takeover-" + uuid.uuid4().hex
    poster = Poster(http)
    assert await poster.post(api_1, body, key) == 202
    await wait_committed(own_broker, PARTITIONS, 3)
    first_writer.stop()
    assert first_writer.wait_exit(30) == 0

    # The retry reaches an API process that never saw the key, while no writer runs; the
    # next writer knows the batch only from the warehouse.
    api_2 = await asyncio.to_thread(
        servers, "api-2", kafka_args("serve", own_broker, tmp_path / "api-2", PARTITIONS, "--no-writer")
    )
    assert await poster.post(api_2, body, key) == 202
    assert await poster.post(api_2, inference_batch(["exp_t1"], 2), "after-" + uuid.uuid4().hex) == 202
    second_writer = await asyncio.to_thread(servers, "writer-2", writer_args)
    await wait_committed(own_broker, PARTITIONS, 3 + 3 + 1)
    assert await stop_and_read(second_writer, tmp_path / "writer") == per_experiment(body) + Counter(exp_t1=2)
