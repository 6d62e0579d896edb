"""POST /api/v1/telemetry/events: each answer, good and bad, on the embedded default."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support import eventually

URL = "/api/v1/telemetry/events"


@pytest.fixture(params=["decoded on the event loop", "decoded by a worker process"])
async def client(request: pytest.FixtureRequest, app_client: Any) -> TestClient:
    """Every answer below holds whichever of the two decodes a batch (service/ingest/workers.py)."""
    if request.param == "decoded by a worker process":
        return await app_client(ingest_workers=1, ingest_inline_bytes=1)
    return await app_client()


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_name": ["crucible", "model", "inference"],
        "measurements": {"duration_ms": 234, "tokens": 150},
        "metadata": {"experiment_id": "exp_abc123", "model": "gpt-4", "request_id": "req_12345"},
        "timestamp": "2024-01-15T10:35:00Z",
    }
    base.update(overrides)
    return base


def assert_error_shape(body: dict[str, Any], code: str) -> dict[str, Any]:
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    return error


async def stored_count(client: TestClient, **filters: str) -> int:
    query = {f"filter[{k}]": v for k, v in filters.items()}
    answer = await client.get("/api/v1/telemetry/aggregate", params={"agg": "count", **query})
    points = (await answer.json())["data"]
    return sum(p["count"] for p in points)


async def test_accepts_a_batch_and_stores_it(client: TestClient) -> None:
    answer = await client.post(URL, json={"events": [event(), event()]})
    assert answer.status == 202
    assert await answer.json() == {"data": {"accepted": 2, "rejected": 0, "errors": []}}

    async def stored() -> bool:
        return await stored_count(client, experiment_id="exp_abc123") == 2

    await eventually(stored)


async def test_event_fields_come_back_as_sent(client: TestClient) -> None:
    sent = event(id="client-chosen-1", data={"prompt": "hi", "scores": [1, 2]})
    assert (await client.post(URL, json={"events": [sent]})).status == 202

    async def arrived() -> bool:
        return await stored_count(client) == 1

    await eventually(arrived)
    got = (await (await client.get(URL)).json())["data"][0]
    assert got["id"] == "client-chosen-1"
    assert got["event_name"] == ["crucible", "model", "inference"]
    assert got["measurements"] == {"duration_ms": 234.0, "tokens": 150.0}
    assert got["metadata"] == sent["metadata"]
    assert got["timestamp"] == "2024-01-15T10:35:00Z"
    assert got["data"] == {"prompt": "hi", "scores": [1, 2]}


async def test_missing_timestamp_is_the_receive_time(client: TestClient) -> None:
    sent = event()
    del sent["timestamp"]
    assert (await client.post(URL, json={"events": [sent]})).status == 202

    async def arrived() -> bool:
        return await stored_count(client) == 1

    await eventually(arrived)
    got = (await (await client.get(URL)).json())["data"][0]
    assert got["timestamp"] == got["received_at"]


async def test_timestamps_are_stored_in_utc(client: TestClient) -> None:
    sent = [
        event(id="offset", timestamp="2024-01-15T12:35:00.25+02:00"),
        event(id="no-zone", timestamp="2024-01-15T10:35:00.5"),  # a time without a zone is UTC
    ]
    assert (await client.post(URL, json={"events": sent})).status == 202

    async def arrived() -> bool:
        return await stored_count(client) == 2

    await eventually(arrived)
    got = {e["id"]: e["timestamp"] for e in (await (await client.get(URL)).json())["data"]}
    assert got == {"offset": "2024-01-15T10:35:00.250000Z", "no-zone": "2024-01-15T10:35:00.500000Z"}


async def test_partly_valid_batch_reports_each_rejected_event(client: TestClient) -> None:
    batch = [
        event(),
        event(measurements={"duration_ms": "fast"}),  # non-numeric
        event(measurements={"duration_ms": 1.5e300}),  # not finite: made 1e999 below, json can't write it
        event(event_name=[]),  # empty name
        event(event_name=["x" * 65]),  # over-long name segment
        event(metadata={"experiment_id": 7}),  # non-string metadata value
        event(timestamp="yesterday"),  # not ISO 8601
        event(timestamp="2999-01-01T00:00:00Z"),  # more than a day in the future
        event(event_name=["crucible.model", "inference"]),  # a dot inside a segment
        event(),
    ]
    text = json.dumps({"events": batch}).replace("1.5e+300", "1e999")
    answer = await client.post(URL, data=text, headers={"Content-Type": "application/json"})
    assert answer.status == 202
    body = (await answer.json())["data"]
    assert body["accepted"] == 2
    assert body["rejected"] == 8
    by_index = {e["index"]: e for e in body["errors"]}
    assert sorted(by_index) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert by_index[1]["path"].startswith("$.events[1].measurements")
    assert "float" in by_index[1]["message"]
    assert "range" in by_index[2]["message"]
    assert by_index[3]["path"] == "$.events[3].event_name"
    assert by_index[4]["path"].startswith("$.events[4].event_name")
    assert by_index[5]["path"].startswith("$.events[5].metadata")
    assert by_index[6]["path"] == "$.events[6].timestamp"
    assert by_index[7]["path"] == "$.events[7].timestamp"
    assert "future" in by_index[7]["message"]
    assert by_index[8]["path"] == "$.events[8].event_name"


async def test_batch_with_no_valid_event_is_422(client: TestClient) -> None:
    answer = await client.post(URL, json={"events": [event(event_name=[]), event(measurements={"a": "b"})]})
    assert answer.status == 422
    error = assert_error_shape(await answer.json(), "validation_error")
    assert [e["index"] for e in error["details"]["events"]] == [0, 1]
    assert await stored_count(client) == 0


async def test_empty_batch_is_422(client: TestClient) -> None:
    answer = await client.post(URL, json={"events": []})
    assert answer.status == 422
    assert_error_shape(await answer.json(), "validation_error")


async def test_body_that_is_not_a_batch_is_422(client: TestClient) -> None:
    answer = await client.post(URL, json={"event": []})
    assert answer.status == 422
    error = assert_error_shape(await answer.json(), "validation_error")
    assert "events" in error["message"]


async def test_malformed_json_is_400(client: TestClient) -> None:
    answer = await client.post(URL, data=b'{"events": [', headers={"Content-Type": "application/json"})
    assert answer.status == 400
    assert_error_shape(await answer.json(), "bad_request")


async def test_body_over_the_limit_is_413(app_client: Any) -> None:
    client = await app_client(max_body_bytes=1000)
    answer = await client.post(URL, json={"events": [event(data={"pad": "x" * 2000})]})
    assert answer.status == 413
    assert_error_shape(await answer.json(), "payload_too_large")


async def test_chunked_body_over_the_limit_is_413(app_client: Any) -> None:
    client = await app_client(max_body_bytes=1000)

    async def chunks() -> Any:
        for _ in range(30):
            yield b" " * 100

    answer = await client.post(URL, data=chunks())
    assert answer.status == 413
    assert_error_shape(await answer.json(), "payload_too_large")


async def test_more_events_than_the_batch_limit_is_422(app_client: Any) -> None:
    client = await app_client(max_batch_events=3)
    answer = await client.post(URL, json={"events": [event()] * 4})
    assert answer.status == 422
    error = assert_error_shape(await answer.json(), "validation_error")
    assert "at most 3" in error["message"]
    # The limit holds on the per-event path (an invalid event in the batch) too.
    answer = await client.post(URL, json={"events": [event(), event(event_name=[]), event(), event()]})
    assert answer.status == 422


async def test_idempotency_key_replays_the_first_answer_and_appends_once(client: TestClient) -> None:
    body = {"events": [event(), event(event_name=[])]}
    headers = {"Idempotency-Key": "batch-0001"}
    first = await client.post(URL, json=body, headers=headers)
    second = await client.post(URL, json=body, headers=headers)
    assert first.status == second.status == 202
    assert await first.json() == await second.json()
    assert second.headers["Idempotent-Replayed"] == "true"

    async def arrived() -> bool:
        return await stored_count(client) >= 1

    await eventually(arrived)
    await client.post(URL, json={"events": [event(metadata={"experiment_id": "exp_marker"})]})

    async def marker_arrived() -> bool:
        return await stored_count(client, experiment_id="exp_marker") == 1

    await eventually(marker_arrived)
    assert await stored_count(client, experiment_id="exp_abc123") == 1


async def test_retried_batch_gets_the_same_event_ids(app_client: Any) -> None:
    from service.ingest.ingestor import batch_id_for

    assert batch_id_for("key-1") == batch_id_for("key-1")
    assert batch_id_for("key-1") != batch_id_for("key-2")
    assert batch_id_for(None) != batch_id_for(None)


async def test_idempotency_key_with_another_body_is_422(client: TestClient) -> None:
    headers = {"Idempotency-Key": "batch-0002"}
    assert (await client.post(URL, json={"events": [event()]}, headers=headers)).status == 202
    answer = await client.post(URL, json={"events": [event(), event()]}, headers=headers)
    assert answer.status == 422
    error = assert_error_shape(await answer.json(), "validation_error")
    assert "Idempotency-Key" in error["details"]


async def test_full_log_is_503_with_retry_after_and_appends_nothing(app_client: Any) -> None:
    client = await app_client(log_max_bytes=256 * 1024)
    big = {"events": [event(data={"pad": "x" * 3000}) for _ in range(100)]}
    statuses = []
    for _ in range(20):
        statuses.append((await client.post(URL, json=big)).status)
        if statuses[-1] == 503:
            break
    assert statuses[-1] == 503, statuses
    accepted_batches = statuses.count(202)
    answer = await client.post(URL, json=big)
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "1"
    assert_error_shape(await answer.json(), "unavailable")

    async def settled() -> bool:
        return await stored_count(client) == accepted_batches * 100

    await eventually(settled)


async def test_unknown_route_is_404_in_the_error_shape(client: TestClient) -> None:
    answer = await client.get("/api/v1/nothing-here")
    assert answer.status == 404
    assert_error_shape(await answer.json(), "not_found")


async def test_wrong_method_is_405_in_the_error_shape(client: TestClient) -> None:
    answer = await client.delete(URL)
    assert answer.status == 405
    assert_error_shape(await answer.json(), "method_not_allowed")


async def test_health_endpoints(client: TestClient) -> None:
    answer = await client.get("/healthz")
    assert answer.status == 200 and (await answer.json())["data"]["status"] == "ok"

    async def ready() -> bool:  # once the writer has joined its group
        answer = await client.get("/readyz")
        body = await answer.json()
        assert (answer.status == 200) == (body["data"]["status"] == "ready")
        return answer.status == 200

    await eventually(ready)
    checks = (await (await client.get("/readyz")).json())["data"]["checks"]
    assert checks == {"log": True, "warehouse": True, "projector": True, "writer": True}


async def test_metrics_count_ingest(client: TestClient) -> None:
    await client.post(URL, json={"events": [event(), event(event_name=[])]})
    text = await (await client.get("/metrics")).text()
    for name in (
        "crucible_events_accepted_total",
        "crucible_events_rejected_total",
        "crucible_ingest_batches_total",
        "crucible_log_append_seconds",
        "crucible_writer_lag_records",
        "crucible_warehouse_insert_seconds",
        "crucible_warehouse_rows_inserted_total",
    ):
        assert name in text
