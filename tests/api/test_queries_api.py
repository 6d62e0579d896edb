"""GET /api/v1/telemetry/events and /aggregate: filters, sort, pages, cursors, exact aggregates."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from service.http.params import Cursor, encode_cursor
from tests.support import eventually

EVENTS = "/api/v1/telemetry/events"
AGGREGATE = "/api/v1/telemetry/aggregate"
BASE_TIME = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.UTC)


def iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def ingest(client: TestClient, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 1000):
        answer = await client.post(EVENTS, json={"events": events[start : start + 1000]})
        assert answer.status == 202, await answer.text()
        assert (await answer.json())["data"]["rejected"] == 0


async def wait_stored(client: TestClient, total: int) -> None:
    async def stored() -> bool:
        answer = await client.get(AGGREGATE, params={"agg": "count"})
        return sum(p["count"] for p in (await answer.json())["data"]) == total

    await eventually(stored)


async def get_json(client: TestClient, path: str, **params: Any) -> Any:
    answer = await client.get(path, params={k: str(v) for k, v in params.items()})
    assert answer.status == 200, await answer.text()
    return await answer.json()


def sample_events(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Events over two hours, three experiments, two models; some lack `latency`."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        measurements: dict[str, float] = {"tokens": float(rng.randint(1, 500))}
        if rng.random() > 0.2:  # a fifth of the events have no latency: NULL, never 0
            measurements["latency"] = round(rng.lognormvariate(5, 0.7), 3)
        events.append(
            {
                "event_name": ["crucible", "model", "inference"] if i % 5 else ["crucible", "run", "progress"],
                "measurements": measurements,
                "metadata": {
                    "experiment_id": f"exp_{i % 3}",
                    "model": "gpt-4" if i % 2 else "claude-3",
                    "run_id": f"run_{i % 4}",
                    "region": "eu" if i % 7 else "us",
                },
                "timestamp": iso(BASE_TIME + dt.timedelta(seconds=rng.uniform(0, 7200))),
                "id": f"evt_test_{i:05d}",
            }
        )
    return events


@pytest.fixture
async def loaded(client: TestClient) -> tuple[TestClient, list[dict[str, Any]]]:
    events = sample_events(3000)
    await ingest(client, events)
    await wait_stored(client, len(events))
    return client, events


def select(events: list[dict[str, Any]], **metadata: str) -> list[dict[str, Any]]:
    return [e for e in events if all(e["metadata"].get(k) == v for k, v in metadata.items())]


def latencies(events: list[dict[str, Any]]) -> np.ndarray:
    return np.array([e["measurements"]["latency"] for e in events if "latency" in e["measurements"]])


async def test_percentiles_equal_numpy_and_ignore_missing_values(loaded: Any) -> None:
    client, events = loaded
    expected = latencies(select(events, experiment_id="exp_1"))
    for agg, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        body = await get_json(client, AGGREGATE, metric="latency", agg=agg, **{"filter[experiment_id]": "exp_1"})
        [point] = body["data"]
        assert point["count"] == len(expected)
        assert point["value"] == pytest.approx(float(np.percentile(expected, q)), rel=1e-12)


async def test_many_copies_of_one_percentile_query_at_once_all_get_the_exact_answer(loaded: Any) -> None:
    # Dashboards polling one chart: copies in flight together share one warehouse query
    # (service/warehouse/shared_reads.py); each must still be the exact answer.
    client, events = loaded
    expected = latencies(select(events, experiment_id="exp_2"))
    params = {"metric": "latency", "agg": "p99", "interval": "1h", "filter[experiment_id]": "exp_2"}
    shared_before = await shared_reads(client)
    bodies = await asyncio.gather(*(get_json(client, AGGREGATE, **params) for _ in range(30)))
    assert all(body == bodies[0] for body in bodies)
    assert sum(point["count"] for point in bodies[0]["data"]) == len(expected)
    assert await shared_reads(client) > shared_before  # some copies did share


async def shared_reads(client: TestClient) -> float:
    text = await (await client.get("/metrics")).text()
    [line] = [line for line in text.splitlines() if line.startswith("crucible_warehouse_shared_reads_total ")]
    return float(line.split()[1])


async def test_basic_aggregates_ignore_missing_values(loaded: Any) -> None:
    client, events = loaded
    values = latencies(events)
    for agg, reference in (
        ("avg", values.mean()),
        ("sum", values.sum()),
        ("min", values.min()),
        ("max", values.max()),
        ("count", len(values)),
    ):
        [point] = (await get_json(client, AGGREGATE, metric="latency", agg=agg))["data"]
        assert point["count"] == len(values)
        assert point["value"] == pytest.approx(float(reference), rel=1e-9)


async def test_a_point_without_an_interval_starts_at_its_first_event_or_the_after_filter(loaded: Any) -> None:
    client, events = loaded
    exp_1 = select(events, experiment_id="exp_1")
    first = min(dt.datetime.fromisoformat(e["timestamp"]) for e in exp_1 if "latency" in e["measurements"])
    for agg in ("avg", "p99"):
        [point] = (await get_json(client, AGGREGATE, metric="latency", agg=agg, **{"filter[experiment_id]": "exp_1"}))[
            "data"
        ]
        assert dt.datetime.fromisoformat(point["timestamp"]) == first
        after = BASE_TIME + dt.timedelta(minutes=30)
        [point] = (await get_json(client, AGGREGATE, metric="latency", agg=agg, **{"filter[after]": iso(after)}))[
            "data"
        ]
        assert dt.datetime.fromisoformat(point["timestamp"]) == after
    grouped = (await get_json(client, AGGREGATE, agg="count", group_by="model"))["data"]
    for point in grouped:
        mine = [e for e in events if e["metadata"]["model"] == point["group"]]
        assert dt.datetime.fromisoformat(point["timestamp"]) == min(
            dt.datetime.fromisoformat(e["timestamp"]) for e in mine
        )


async def test_count_without_metric_counts_events(loaded: Any) -> None:
    client, events = loaded
    [point] = (await get_json(client, AGGREGATE, agg="count"))["data"]
    assert point["value"] == point["count"] == len(events)


async def test_interval_buckets_are_utc_aligned_and_match_numpy(loaded: Any) -> None:
    client, events = loaded
    body = await get_json(client, AGGREGATE, metric="latency", agg="p95", interval="5m")
    points = body["data"]
    assert len(points) == 24  # two hours of five-minute buckets
    for point in points:
        start = dt.datetime.fromisoformat(point["timestamp"])
        assert start.minute % 5 == 0 and start.second == 0 and start.tzinfo is not None
        in_bucket = [
            e for e in events if start <= dt.datetime.fromisoformat(e["timestamp"]) < start + dt.timedelta(minutes=5)
        ]
        expected = latencies(in_bucket)
        assert point["count"] == len(expected)
        assert point["value"] == pytest.approx(float(np.percentile(expected, 95)), rel=1e-12)
    daily = (await get_json(client, AGGREGATE, agg="count", interval="1d"))["data"]
    assert [p["timestamp"] for p in daily] == ["2024-01-15T00:00:00Z"]
    hourly = (await get_json(client, AGGREGATE, agg="count", interval="1h"))["data"]
    assert [p["timestamp"] for p in hourly] == ["2024-01-15T10:00:00Z", "2024-01-15T11:00:00Z"]


@pytest.mark.parametrize("group_by", ["model", "experiment_id", "run_id", "event_name", "metadata.region"])
async def test_group_by(loaded: Any, group_by: str) -> None:
    client, events = loaded
    body = await get_json(client, AGGREGATE, metric="latency", agg="p50", group_by=group_by)

    def key(e: dict[str, Any]) -> str:
        if group_by == "event_name":
            return ".".join(e["event_name"])
        return e["metadata"][group_by.removeprefix("metadata.")]

    groups = sorted({key(e) for e in events})
    assert [p["group"] for p in body["data"]] == groups
    for point in body["data"]:
        expected = latencies([e for e in events if key(e) == point["group"]])
        assert point["count"] == len(expected)
        assert point["value"] == pytest.approx(float(np.percentile(expected, 50)), rel=1e-12)


async def test_filters_narrow_aggregates(loaded: Any) -> None:
    client, events = loaded
    after, before = BASE_TIME + dt.timedelta(minutes=30), BASE_TIME + dt.timedelta(minutes=60)
    params = {
        "filter[event_name]": "crucible.model.inference",
        "filter[experiment_id]": "exp_2",
        "filter[model]": "gpt-4",
        "filter[run_id]": "run_1",
        "filter[after]": iso(after),
        "filter[before]": iso(before),
    }
    expected = [
        e
        for e in select(events, experiment_id="exp_2", model="gpt-4", run_id="run_1")
        if e["event_name"] == ["crucible", "model", "inference"]
        and after <= dt.datetime.fromisoformat(e["timestamp"]) < before
    ]
    [point] = (await get_json(client, AGGREGATE, agg="count", **params))["data"]
    assert point["count"] == len(expected) > 0
    page = await get_json(client, EVENTS, per_page=100, **params)
    assert {e["id"] for e in page["data"]} == {e["id"] for e in expected}
    assert page["meta"]["total"] == len(expected)


async def test_event_list_sorted_newest_first_by_default(loaded: Any) -> None:
    client, events = loaded
    body = await get_json(client, EVENTS)
    assert body["meta"]["per_page"] == 25 and body["meta"]["page"] == 1
    assert body["meta"]["total"] == len(events) and body["meta"]["has_more"] is True
    stamps = [e["timestamp"] for e in body["data"]]
    assert stamps == sorted(stamps, reverse=True)
    newest = sorted(events, key=lambda e: (e["timestamp"], e["id"]), reverse=True)[:25]
    assert [e["id"] for e in body["data"]] == [e["id"] for e in newest]
    ascending = await get_json(client, EVENTS, sort="timestamp", per_page=100)
    stamps = [e["timestamp"] for e in ascending["data"]]
    assert stamps == sorted(stamps) and len(stamps) == 100


async def test_page_numbers(loaded: Any) -> None:
    client, _ = loaded
    first = await get_json(client, EVENTS, per_page=10, page=1)
    second = await get_json(client, EVENTS, per_page=10, page=2)
    assert second["meta"]["page"] == 2
    assert not {e["id"] for e in first["data"]} & {e["id"] for e in second["data"]}


async def test_cursor_walks_every_event_once_while_events_keep_arriving(loaded: Any) -> None:
    client, events = loaded
    seen: list[str] = []
    cursor = None
    late = 0
    while True:
        params: dict[str, Any] = {"per_page": 100}
        if cursor:
            params["cursor"] = cursor
        body = await get_json(client, EVENTS, **params)
        seen.extend(e["id"] for e in body["data"])
        # New events, some newer and some older than the page being read.
        fresh = sample_events(50, seed=1000 + late)
        for i, e in enumerate(fresh):
            e["id"] = f"evt_late_{late}_{i}"
        await ingest(client, fresh)
        late += 1
        if not body["meta"]["has_more"]:
            assert body["meta"]["next_cursor"] is None
            break
        cursor = body["meta"]["next_cursor"]
    assert len(seen) == len(set(seen)) == len(events)
    assert set(seen) == {e["id"] for e in events}


async def test_event_list_aggregate_form(loaded: Any) -> None:
    client, events = loaded
    body = await get_json(client, EVENTS, agg="avg", agg_field="latency", group_by="model")
    for point in body["data"]:
        expected = latencies(select(events, model=point["group"]))
        assert point["count"] == len(expected)
        assert point["value"] == pytest.approx(float(expected.mean()), rel=1e-9)
    [total] = (await get_json(client, EVENTS, agg="count"))["data"]
    assert total["count"] == len(events)


async def test_aggregate_of_nothing_is_empty(client: TestClient) -> None:
    assert (await get_json(client, AGGREGATE, agg="p99", metric="latency"))["data"] == []
    body = await get_json(client, EVENTS)
    assert body["data"] == [] and body["meta"]["has_more"] is False and body["meta"]["total"] == 0


@pytest.mark.parametrize(
    ("path", "params", "parameter", "mentions"),
    [
        (AGGREGATE, {"agg": "median", "metric": "latency"}, "agg", "p95"),
        (AGGREGATE, {"metric": "latency"}, "agg", "p99"),
        (AGGREGATE, {"agg": "avg"}, "metric", "required"),
        (AGGREGATE, {"agg": "count", "interval": "7m"}, "interval", "5m"),
        (AGGREGATE, {"agg": "count", "group_by": "colour"}, "group_by", "metadata.<key>"),
        (AGGREGATE, {"agg": "count", "group_by": "metadata."}, "group_by", "metadata.<key>"),
        (AGGREGATE, {"agg": "count", "filter[colour]": "red"}, "filter[colour]", "experiment_id"),
        (AGGREGATE, {"agg": "count", "filter[after]": "last tuesday"}, "filter[after]", "ISO 8601"),
        (AGGREGATE, {"agg": "count", "bucket": "1m"}, "bucket", "interval"),
        (EVENTS, {"sort": "-tokens"}, "sort", "-timestamp"),
        (EVENTS, {"per_page": "101"}, "per_page", "between 1 and 100"),
        (EVENTS, {"per_page": "many"}, "per_page", "integer"),
        (EVENTS, {"page": "0"}, "page", "at least 1"),
        (EVENTS, {"cursor": "not-a-cursor"}, "cursor", "cursor"),
        (EVENTS, {"agg": "mode", "agg_field": "latency"}, "agg", "count"),
        (EVENTS, {"agg": "sum"}, "agg_field", "required"),
        (
            EVENTS,
            {"cursor": encode_cursor(Cursor("-timestamp", "yesterday", "evt_1", "2024-01-15 10:00:00.000000"))},
            "cursor",
            "cursor",
        ),
        (
            EVENTS,
            {"cursor": encode_cursor(Cursor("-timestamp", "2024-01-15 10:00:00.000000", "evt_1", ""))},
            "cursor",
            "cursor",
        ),
        (AGGREGATE, {"agg": "count", "limit": "0"}, "limit", "between 1 and 100000"),
    ],
)
async def test_bad_query_parameters_are_422_naming_the_allowed_values(
    client: TestClient, path: str, params: dict[str, str], parameter: str, mentions: str
) -> None:
    answer = await client.get(path, params=params)
    assert answer.status == 422
    error = (await answer.json())["error"]
    assert error["code"] == "validation_error"
    assert parameter in error["details"]
    assert mentions in error["message"]


async def test_cursor_is_tied_to_its_sort(loaded: Any) -> None:
    client, _ = loaded
    body = await get_json(client, EVENTS, per_page=5)
    answer = await client.get(EVENTS, params={"cursor": body["meta"]["next_cursor"], "sort": "timestamp"})
    assert answer.status == 422
    assert "sort" in (await answer.json())["error"]["message"]


@pytest.mark.parametrize(
    "bound",
    [
        "0744-07-14T20:28:59.81-20:16",  # before DateTime64's range, and a year strftime does not pad
        "0001-01-01T00:00:00+01:00",  # before the first datetime once in UTC
        "9095-05-30T07:41:17.464061-06:18",  # after DateTime64's range
        "9999-12-31T23:59:59-01:00",  # after the last datetime once in UTC
    ],
)
async def test_times_beyond_the_warehouse_range_filter_like_its_ends(loaded: Any, bound: str) -> None:
    """Found by the OpenAPI fuzzer: such a filter was a 503 (the warehouse refused the parameter)."""
    client, events = loaded
    before_all = bound < "2000"
    for path, params in ((EVENTS, {}), (AGGREGATE, {"agg": "count"})):
        answer = await client.get(path, params={**params, "filter[after]": bound})
        assert answer.status == 200, await answer.text()
        body = await answer.json()
        counted = body["meta"]["total"] if path == EVENTS else sum(p["count"] for p in body["data"])
        assert counted == (len(events) if before_all else 0)


async def test_aggregate_limit_caps_the_points(loaded: Any) -> None:
    client, _ = loaded
    every = await get_json(client, AGGREGATE, agg="count", interval="1m")
    capped = await get_json(client, AGGREGATE, agg="count", interval="1m", limit=2)
    assert len(every["data"]) > 2 and capped["data"] == every["data"][:2]
