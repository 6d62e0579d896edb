"""Many copies of one keyed request at once: one attempt acts, every copy gets its answer.

Each test sends its copies together (asyncio.gather over one client), so a check of
"was this key answered?" and the act it guards are interleaved by the event loop
exactly as concurrent retries from several clients interleave them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from schemas.resources import StatisticalResultRecorded
from service.http.appkeys import LOG
from service.log.interface import RESOURCES_TOPIC
from service.resources.fold import event_decoder
from tests.api.test_queries_api import ingest, wait_stored
from tests.resource_helpers import idempotency
from tests.statistics.test_statistics_api import body as stats_body
from tests.statistics.test_statistics_api import telemetry
from tests.support import eventually

EVENTS = "/api/v1/telemetry/events"
AGGREGATE = "/api/v1/telemetry/aggregate"
COPIES = 50
JSON = {"Content-Type": "application/json"}


def events_of(experiment_id: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "event_name": ["crucible", "model", "inference"],
            "measurements": {"duration_ms": float(i), "tokens": 150.0},
            "metadata": {"experiment_id": experiment_id, "model": "m", "request_id": f"req_{i:06d}"},
            "timestamp": "2024-01-15T10:35:00Z",
        }
        for i in range(count)
    ]


async def stored_ids(client: TestClient, experiment_id: str) -> Counter[str]:
    """Every stored event id of the experiment, with how often it is stored."""
    ids: Counter[str] = Counter()
    params = {"filter[experiment_id]": experiment_id, "per_page": "100"}
    while True:
        page = await (await client.get(EVENTS, params=params)).json()
        ids.update(event["id"] for event in page["data"])
        cursor = page["meta"].get("next_cursor")
        if not cursor:
            return ids
        params["cursor"] = cursor


async def count_of(client: TestClient, experiment_id: str) -> int:
    answer = await client.get(AGGREGATE, params={"agg": "count", "filter[experiment_id]": experiment_id})
    return sum(point["count"] for point in (await answer.json())["data"])


@pytest.mark.parametrize(
    ("events", "workers"),
    [(300, 0), (2000, 1)],
    ids=["small batch decoded on the event loop", "large batch decoded by a worker process"],
)
async def test_concurrent_copies_of_a_keyed_batch_are_stored_once(app_client: Any, events: int, workers: int) -> None:
    client = await app_client(ingest_workers=workers)
    body = json.dumps({"events": events_of("exp_storm", events)}).encode()
    if workers:
        assert len(body) > 64 * 1024  # above the inline limit: the worker process decodes it
    copies = [client.post(EVENTS, data=body, headers={**JSON, **idempotency("storm-1")}) for _ in range(COPIES)]
    # Other clients ingest meanwhile, without a key and with keys of their own.
    others = [
        client.post(EVENTS, json={"events": events_of(f"exp_other{i}", 20)}, headers=idempotency(f"other-{i}"))
        for i in range(10)
    ]
    answers = await asyncio.gather(*copies, *others)
    assert [answer.status for answer in answers] == [202] * len(answers)
    texts = {await answer.text() for answer in answers[:COPIES]}
    assert texts == {json.dumps({"data": {"accepted": events, "rejected": 0, "errors": []}}, separators=(",", ":"))}
    replayed = [answer.headers.get("Idempotent-Replayed") for answer in answers[:COPIES]]
    assert replayed.count("true") == COPIES - 1

    async def all_stored() -> bool:
        return await count_of(client, "exp_storm") >= events and await count_of(client, "exp_other9") == 20

    await eventually(all_stored)
    await ingest(client, events_of("exp_marker", 1))  # once it is visible, everything before it is
    await eventually(lambda: _is(count_of(client, "exp_marker"), 1))
    ids = await stored_ids(client, "exp_storm")
    assert len(ids) == events
    assert set(ids.values()) == {1}


async def _is(count: Any, expected: int) -> bool:
    return bool(await count == expected)


async def test_concurrent_copies_with_another_body_are_422_and_append_nothing(client: TestClient) -> None:
    first = json.dumps({"events": events_of("exp_a", 5)}).encode()
    other = json.dumps({"events": events_of("exp_b", 5)}).encode()
    sends = [
        client.post(EVENTS, data=body, headers={**JSON, **idempotency("mixed-1")})
        for body in [first] + [other] * 10 + [first] * 10
    ]
    statuses = Counter([answer.status for answer in await asyncio.gather(*sends)])
    # Whichever body came first is stored; copies of the other body are refused.
    assert statuses in (Counter({202: 11, 422: 10}), Counter({202: 10, 422: 11}))
    await ingest(client, events_of("exp_marker", 1))
    await wait_stored(client, 6)
    assert await count_of(client, "exp_a") + await count_of(client, "exp_b") == 5


async def test_concurrent_copies_of_a_keyed_create_make_one_experiment(client: TestClient) -> None:
    sends = [
        client.post("/api/v1/experiments", json={"experiment": {"name": "Storm"}}, headers=idempotency("exp-1"))
        for _ in range(COPIES)
    ]
    answers = await asyncio.gather(*sends)
    assert [answer.status for answer in answers] == [201] * COPIES
    ids = {(await answer.json())["data"]["id"] for answer in answers}
    assert len(ids) == 1
    assert [answer.headers.get("Idempotent-Replayed") for answer in answers].count("true") == COPIES - 1
    listed = await (await client.get("/api/v1/experiments")).json()
    assert [experiment["id"] for experiment in listed["data"]] == list(ids)


async def test_concurrent_copies_of_a_keyed_statistical_test_run_it_once(client: TestClient) -> None:
    experiment = (await (await client.post("/api/v1/experiments", json={"experiment": {"name": "S"}})).json())["data"]
    events = telemetry(experiment["id"])
    await ingest(client, events)
    await wait_stored(client, len(events))
    test = stats_body(experiment["id"], "welch_t_test", groups=["a", "b"])
    sends = [client.post("/api/v1/statistical-results", json=test, headers=idempotency("stat-1")) for _ in range(20)]
    answers = await asyncio.gather(*sends)
    assert [answer.status for answer in answers] == [201] * 20
    assert len({await answer.text() for answer in answers}) == 1
    # One event in the log: the copies waited for the first and replayed it, none ran the test again.
    reader = await client.app[LOG].reader(RESOURCES_TOPIC)
    recorded = 0
    while records := await reader.read(0.2, 1000):
        recorded += sum(isinstance(event_decoder.decode(r.value), StatisticalResultRecorded) for r in records)
    await reader.stop()
    assert recorded == 1


async def test_concurrent_copies_of_a_keyed_export_make_one_job(client: TestClient) -> None:
    await ingest(client, events_of("exp_export", 10))
    await wait_stored(client, 10)
    export = {"format": "csv", "async": True}
    sends = [client.post("/api/v1/telemetry/export", json=export, headers=idempotency("export-1")) for _ in range(20)]
    answers = await asyncio.gather(*sends)
    assert [answer.status for answer in answers] == [202] * 20
    jobs = {(await answer.json())["data"]["job_id"] for answer in answers}
    assert len(jobs) == 1
    assert [answer.headers.get("Idempotent-Replayed") for answer in answers].count("true") == 19
    other = await client.post(
        "/api/v1/telemetry/export", json={"format": "jsonl", "async": True}, headers=idempotency("export-1")
    )
    assert other.status == 422
    assert "Idempotency-Key" in (await other.json())["error"]["details"]
