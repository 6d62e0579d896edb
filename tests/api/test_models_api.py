"""/api/v1/models: CRUD, unique names, lists, history, as_of, Idempotency-Key and usage statistics."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from tests.api.test_queries_api import ingest, wait_stored
from tests.resource_helpers import (
    MODELS,
    call,
    create_model,
    error,
    history,
    idempotency,
    list_models,
    walk_with_cursor,
)

MODEL_FIELDS = {"id", "name", "provider", "type", "config", "status", "created_at", "updated_at"}
CONFIG = {"endpoint": "https://api.example.com/v1/completions", "api_key_env": "CUSTOM_API_KEY"}


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["id"] for row in rows]


async def get_model(client: TestClient, model_id: str, **params: str) -> dict[str, Any]:
    return (await call(client, "GET", f"{MODELS}/{model_id}", 200, params=params))["data"]


async def patch_model(client: TestClient, model_id: str, **fields: Any) -> Any:
    return await call(client, "PATCH", f"{MODELS}/{model_id}", 200, json={"model": fields})


# -- create, get, update, delete -----------------------------------------------------------------


async def test_create_answers_201_with_the_model(client: TestClient) -> None:
    model = await create_model(client, "Custom Model", provider="custom", type="llm", config=CONFIG)
    assert set(model) == MODEL_FIELDS
    assert model["id"].startswith("model_")
    assert (model["name"], model["provider"], model["type"], model["config"]) == (
        "Custom Model",
        "custom",
        "llm",
        CONFIG,
    )
    assert model["status"] == "active"
    assert model["created_at"] == model["updated_at"]
    assert await get_model(client, model["id"]) == model


async def test_only_the_name_is_required(client: TestClient) -> None:
    model = await create_model(client, "m" * 255)
    assert (model["provider"], model["type"], model["config"], model["status"]) == ("", "", {}, "active")


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "  "}, "name"),
        ({"name": "m" * 256}, "name"),
        ({"name": "ok", "provider": "p" * 256}, "provider"),
        ({"name": "ok", "type": 7}, "type"),
        ({"name": "ok", "config": ["a"]}, "config"),
        ({"name": "ok", "status": "retired"}, "status"),
        ({"name": "ok", "status": None}, "status"),
        ({"name": "ok", "owner": "me"}, "owner"),
    ],
)
async def test_create_refuses_bad_fields_with_details_by_field(client: TestClient, fields: Any, bad: str) -> None:
    problem = await error(client, "POST", MODELS, 422, "validation_error", json={"model": fields})
    assert list(problem["details"]) == [bad]
    assert (await list_models(client))["meta"]["total"] == 0


async def test_create_lists_every_problem_at_once(client: TestClient) -> None:
    body = {"model": {"name": "", "status": "retired"}}
    problem = await error(client, "POST", MODELS, 422, "validation_error", json=body)
    assert set(problem["details"]) == {"name", "status"}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"model": ', 400, "bad_request"),
        (b"[]", 422, "validation_error"),
        (b'{"name": "GPT-4"}', 422, "validation_error"),
        (b'{"model": []}', 422, "validation_error"),
        (b'{"model": {"name": "a"}, "extra": true}', 422, "validation_error"),
    ],
)
async def test_bad_bodies_are_refused(client: TestClient, body: bytes, status: int, code: str) -> None:
    headers = {"Content-Type": "application/json"}
    await error(client, "POST", MODELS, status, code, data=body, headers=headers)


async def test_patch_changes_the_fields_given(client: TestClient) -> None:
    model = await create_model(client, "GPT-4", provider="openai", type="llm")
    updated = (await patch_model(client, model["id"], status="deprecated", config={"t": 0.7}))["data"]
    assert (updated["name"], updated["provider"], updated["type"]) == ("GPT-4", "openai", "llm")
    assert (updated["status"], updated["config"]) == ("deprecated", {"t": 0.7})
    assert updated["created_at"] == model["created_at"] and updated["updated_at"] > model["updated_at"]
    assert await get_model(client, model["id"]) == updated


@pytest.mark.parametrize(
    ("fields", "bad"), [({"name": ""}, "name"), ({"name": None}, "name"), ({"status": "x"}, "status")]
)
async def test_patch_refuses_bad_fields(client: TestClient, fields: Any, bad: str) -> None:
    model = await create_model(client)
    path = f"{MODELS}/{model['id']}"
    problem = await error(client, "PATCH", path, 422, "validation_error", json={"model": fields})
    assert list(problem["details"]) == [bad]


async def test_delete_answers_204_and_then_the_model_is_gone(client: TestClient) -> None:
    model = await create_model(client)
    path = f"{MODELS}/{model['id']}"
    answer = await client.delete(path)
    assert answer.status == 204
    await error(client, "GET", path, 404, "not_found")
    await error(client, "DELETE", path, 404, "not_found")
    await error(client, "GET", f"{path}/statistics", 404, "not_found")
    assert (await list_models(client))["meta"]["total"] == 0


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"model": {"name": "x"}}),
        ("DELETE", "", None),
        ("GET", "/history", None),
        ("GET", "/statistics", None),
    ],
)
async def test_unknown_id_is_404_not_found(client: TestClient, method: str, suffix: str, body: Any) -> None:
    problem = await error(client, method, f"{MODELS}/model_000000000000{suffix}", 404, "not_found", json=body)
    assert "model_000000000000" in problem["message"]


# -- unique names --------------------------------------------------------------------------------


@pytest.mark.parametrize("duplicate", ["GPT-4", "gpt-4", "Gpt-4"])
async def test_a_duplicate_name_is_409_ignoring_case(client: TestClient, duplicate: str) -> None:
    first = await create_model(client, "GPT-4")
    problem = await error(client, "POST", MODELS, 409, "conflict", json={"model": {"name": duplicate}})
    assert first["id"] in problem["message"]
    assert (await list_models(client))["meta"]["total"] == 1


async def test_a_rename_onto_another_models_name_is_409(client: TestClient) -> None:
    await create_model(client, "GPT-4")
    claude = await create_model(client, "Claude")
    await error(client, "PATCH", f"{MODELS}/{claude['id']}", 409, "conflict", json={"model": {"name": "gpt-4"}})
    assert (await get_model(client, claude["id"]))["name"] == "Claude"


async def test_a_model_may_change_the_case_of_its_own_name(client: TestClient) -> None:
    model = await create_model(client, "gpt-4")
    assert (await patch_model(client, model["id"], name="GPT-4"))["data"]["name"] == "GPT-4"


async def test_a_rename_frees_the_old_name(client: TestClient) -> None:
    model = await create_model(client, "GPT-4")
    await patch_model(client, model["id"], name="GPT-4o")
    await error(client, "POST", MODELS, 409, "conflict", json={"model": {"name": "gpt-4O"}})
    again = await create_model(client, "GPT-4")
    assert again["id"] != model["id"]


async def test_a_delete_frees_the_name(client: TestClient) -> None:
    model = await create_model(client, "GPT-4")
    await call(client, "DELETE", f"{MODELS}/{model['id']}", 204)
    again = await create_model(client, "gpt-4")
    assert again["id"] != model["id"]


async def test_concurrent_creates_of_one_name_make_one_model(client: TestClient) -> None:
    answers = await asyncio.gather(*(client.post(MODELS, json={"model": {"name": "Same"}}) for _ in range(6)))
    assert sorted(a.status for a in answers) == [201, 409, 409, 409, 409, 409]
    assert (await list_models(client))["meta"]["total"] == 1


# -- lists ---------------------------------------------------------------------------------------


async def make_catalogue(client: TestClient) -> list[dict[str, Any]]:
    specs = [
        ("GPT-4", "openai", "llm", "active"),
        ("claude-3", "anthropic", "llm", "active"),
        ("gpt-3.5", "openai", "llm", "deprecated"),
        ("Ada Embeddings", "openai", "embedding", "inactive"),
        ("Llama-2", "meta", "llm", "inactive"),
    ]
    return [await create_model(client, n, provider=p, type=t, status=s) for n, p, t, s in specs]


async def test_the_list_is_sorted_by_name_by_default(client: TestClient) -> None:
    models = await make_catalogue(client)
    body = await list_models(client)
    assert ids(body["data"]) == ids(sorted(models, key=lambda m: m["name"].casefold()))
    assert body["meta"] == {"total": 5, "page": 1, "per_page": 25, "next_cursor": None, "has_more": False}
    assert set(body["data"][0]) == MODEL_FIELDS


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"filter[name]": "GPT"}, lambda m: "gpt" in m["name"].lower()),
        ({"filter[provider]": "openai"}, lambda m: m["provider"] == "openai"),
        ({"filter[type]": "llm"}, lambda m: m["type"] == "llm"),
        ({"filter[status]": "inactive"}, lambda m: m["status"] == "inactive"),
        (
            {"filter[provider]": "openai", "filter[type]": "llm"},
            lambda m: m["provider"] == "openai" and m["type"] == "llm",
        ),
    ],
)
async def test_filters(client: TestClient, params: dict[str, str], keep: Any) -> None:
    models = await make_catalogue(client)
    body = await list_models(client, **params)
    expected = [m for m in sorted(models, key=lambda m: m["name"].casefold()) if keep(m)]
    assert ids(body["data"]) == ids(expected)
    assert body["meta"]["total"] == len(expected)


async def test_sorts(client: TestClient) -> None:
    models = await make_catalogue(client)
    await patch_model(client, models[1]["id"], config={"touched": True})
    by_name = ids(sorted(models, key=lambda m: m["name"].casefold()))
    assert ids((await list_models(client, sort="-name"))["data"]) == by_name[::-1]
    assert ids((await list_models(client, sort="created_at"))["data"]) == ids(models)
    assert ids((await list_models(client, sort="-created_at"))["data"]) == ids(models)[::-1]
    assert ids((await list_models(client, sort="-updated_at"))["data"])[0] == models[1]["id"]


@pytest.mark.parametrize("sort", ["name", "-name", "created_at", "-updated_at"])
async def test_the_cursor_walks_every_model_once(client: TestClient, sort: str) -> None:
    rng = random.Random(5)
    for i in range(17):
        await create_model(client, f"{rng.choice(['a', 'B', 'c'])}-{i}")
    everything = (await list_models(client, sort=sort, per_page=100))["data"]
    assert ids(await walk_with_cursor(client, MODELS, sort=sort, per_page=3)) == ids(everything)


async def test_page_and_per_page(client: TestClient) -> None:
    models = await make_catalogue(client)
    by_name = ids(sorted(models, key=lambda m: m["name"].casefold()))
    second = await list_models(client, per_page=2, page=2)
    assert ids(second["data"]) == by_name[2:4]
    assert second["meta"]["has_more"] is True and second["meta"]["total"] == 5


@pytest.mark.parametrize(
    ("params", "parameter", "named"),
    [
        ({"filter[family]": "gpt"}, "filter[family]", "name, provider, status, type"),
        ({"filter[status]": "retired"}, "filter[status]", "active, deprecated, inactive"),
        ({"sort": "provider"}, "sort", "-created_at, -name, -updated_at, created_at, name, updated_at"),
        ({"limit": "5"}, "limit", "cursor, page, per_page, sort"),
        ({"per_page": "1000"}, "per_page", "between 1 and 100"),
        ({"cursor": "%%%"}, "cursor", "cursor"),
    ],
)
async def test_bad_list_parameters_are_422_naming_the_allowed_values(
    client: TestClient, params: dict[str, str], parameter: str, named: str
) -> None:
    problem = await error(client, "GET", MODELS, 422, "validation_error", params=params)
    assert list(problem["details"]) == [parameter]
    assert named in problem["details"][parameter][0]


# -- history and as_of ---------------------------------------------------------------------------


async def test_history_and_as_of(client: TestClient) -> None:
    model = await create_model(client, "GPT-4", provider="openai")
    await patch_model(client, model["id"], name="GPT-4o", status="deprecated")
    path = f"{MODELS}/{model['id']}"

    entries = (await history(client, path))["data"]

    assert [e["type"] for e in entries] == ["ModelCreated", "ModelUpdated"]
    assert entries[1]["changes"] == {"name": "GPT-4o", "status": "deprecated"}
    assert await get_model(client, model["id"], as_of=entries[0]["at"]) == model
    before = (dt.datetime.fromisoformat(entries[0]["at"]) - dt.timedelta(microseconds=1)).isoformat()
    await error(client, "GET", path, 404, "not_found", params={"as_of": before})
    await call(client, "DELETE", path, 204)
    assert [e["type"] for e in (await history(client, path))["data"]][-1] == "ModelDeleted"
    assert (await get_model(client, model["id"], as_of=entries[1]["at"]))["name"] == "GPT-4o"


# -- Idempotency-Key -----------------------------------------------------------------------------


async def test_a_retried_create_returns_the_first_answer_and_creates_nothing(client: TestClient) -> None:
    body = {"model": {"name": "GPT-4", "provider": "openai"}}
    first = await client.post(MODELS, json=body, headers=idempotency("m1"))
    retry = await client.post(MODELS, json=body, headers=idempotency("m1"))
    assert (first.status, retry.status) == (201, 201)
    assert await retry.json() == await first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert (await list_models(client))["meta"]["total"] == 1
    model_id = (await first.json())["data"]["id"]
    assert (await history(client, f"{MODELS}/{model_id}"))["meta"]["total"] == 1


async def test_a_retry_replays_rather_than_conflicting_with_its_own_name(client: TestClient) -> None:
    body = {"model": {"name": "GPT-4"}}
    first = await call(client, "POST", MODELS, 201, json=body, headers=idempotency("m1"))
    await patch_model(client, first["data"]["id"], provider="openai")
    assert await call(client, "POST", MODELS, 201, json=body, headers=idempotency("m1")) == first


async def test_the_same_key_with_another_body_is_422(client: TestClient) -> None:
    await call(client, "POST", MODELS, 201, json={"model": {"name": "A"}}, headers=idempotency("m1"))
    problem = await error(
        client, "POST", MODELS, 422, "validation_error", json={"model": {"name": "B"}}, headers=idempotency("m1")
    )
    assert "Idempotency-Key" in problem["details"]
    assert (await list_models(client))["meta"]["total"] == 1


async def test_a_retried_refusal_is_refused_again(client: TestClient) -> None:
    await create_model(client, "Taken")
    body = {"model": {"name": "taken"}}
    await error(client, "POST", MODELS, 409, "conflict", json=body, headers=idempotency("m1"))
    await error(client, "POST", MODELS, 409, "conflict", json=body, headers=idempotency("m1"))
    assert (await list_models(client))["meta"]["total"] == 1


async def test_concurrent_posts_with_one_key_create_one_model(client: TestClient) -> None:
    body = {"model": {"name": "Raced"}}
    answers = await asyncio.gather(*(client.post(MODELS, json=body, headers=idempotency("race")) for _ in range(6)))
    assert [a.status for a in answers] == [201] * 6
    bodies = [await a.json() for a in answers]
    assert all(b == bodies[0] for b in bodies)
    assert (await list_models(client))["meta"]["total"] == 1


# -- statistics ----------------------------------------------------------------------------------


def iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def inference_events(model: dict[str, Any], now: dt.datetime, seed: int = 1) -> list[dict[str, Any]]:
    """Inference events of `model` (by id or by name) and of others, at ages from minutes to weeks,
    and some dated two hours ahead."""
    rng = random.Random(seed)
    ages = [
        dt.timedelta(minutes=1),
        dt.timedelta(hours=3),
        dt.timedelta(days=3),
        dt.timedelta(days=12),
        dt.timedelta(days=45),
        -dt.timedelta(hours=2),  # dated ahead of now: in no period
    ]
    events = []
    for i in range(600):
        measurements: dict[str, float] = {}
        kind = i % 5
        if kind in (0, 1):
            measurements["latency_ms"] = round(rng.lognormvariate(5, 0.8), 3)
        if kind == 1:
            measurements["duration_ms"] = 1e9  # latency_ms wins over it
        if kind == 2:
            measurements["duration_ms"] = round(rng.uniform(10, 900), 3)
        if i % 3:
            measurements["tokens" if i % 2 else "total_tokens"] = float(rng.randint(1, 800))
        metadata = {"request_id": f"req_{i}"}
        owner = i % 4
        if owner == 0:
            metadata["model_id"] = model["id"]
        elif owner == 1:
            metadata["model"] = model["name"]
        elif owner == 2:
            metadata["model"] = "someone-else"
            metadata["model_id"] = "model_other"
        else:
            metadata["model"] = model["name"].lower() + "-mini"
        outcome = rng.random()
        if outcome < 0.08:
            metadata["status"] = "error"
        elif outcome < 0.16:
            metadata["error_type"] = rng.choice(["timeout", "rate_limit", "server_error"])
        elif outcome < 0.2:
            metadata["status"] = "error"
            metadata["error_type"] = "timeout"
        else:
            metadata["status"] = "ok"
        age = ages[i % len(ages)] + dt.timedelta(seconds=rng.uniform(0, 600))
        events.append(
            {
                "event_name": ["crucible", "model", "inference"] if i % 11 else ["crucible", "eval", "judgement"],
                "measurements": measurements,
                "metadata": metadata,
                "timestamp": iso(now - age),
                "id": f"evt_stats_{i:04d}",
            }
        )
    return events


def expected_statistics(
    model: dict[str, Any], events: list[dict[str, Any]], since: dt.datetime, until: dt.datetime
) -> dict[str, Any]:
    mine = [
        e
        for e in events
        if e["event_name"] == ["crucible", "model", "inference"]
        and (e["metadata"].get("model_id") == model["id"] or e["metadata"].get("model") == model["name"])
        and since <= dt.datetime.fromisoformat(e["timestamp"]) <= until
    ]
    failed = [e for e in mine if e["metadata"].get("status") == "error" or e["metadata"].get("error_type")]
    latencies = [
        e["measurements"].get("latency_ms", e["measurements"].get("duration_ms"))
        for e in mine
        if "latency_ms" in e["measurements"] or "duration_ms" in e["measurements"]
    ]
    tokens = [e["measurements"].get("tokens", e["measurements"].get("total_tokens", 0.0)) for e in mine]
    breakdown: dict[str, int] = {}
    for e in failed:
        kind = e["metadata"].get("error_type") or "unknown"
        breakdown[kind] = breakdown.get(kind, 0) + 1
    return {
        "total_requests": len(mine),
        "success_rate": (len(mine) - len(failed)) / len(mine),
        "avg_latency_ms": float(np.mean(latencies)),
        "p99_latency_ms": float(np.percentile(latencies, 99)),
        "total_tokens": round(sum(tokens)),
        "error_breakdown": breakdown,
    }


@pytest.fixture
async def with_telemetry(client: TestClient) -> tuple[TestClient, dict[str, Any], list[dict[str, Any]]]:
    model = await create_model(client, "GPT-4")
    await create_model(client, "someone-else")
    events = inference_events(model, dt.datetime.now(dt.UTC))
    await ingest(client, events)
    await wait_stored(client, len(events))
    return client, model, events


@pytest.mark.parametrize(
    ("period", "span"),
    [
        ("1h", dt.timedelta(hours=1)),
        ("24h", dt.timedelta(days=1)),
        ("7d", dt.timedelta(days=7)),
        ("30d", dt.timedelta(days=30)),
    ],
)
async def test_statistics_match_the_telemetry(with_telemetry: Any, period: str, span: dt.timedelta) -> None:
    client, model, events = with_telemetry
    stats = (await call(client, "GET", f"{MODELS}/{model['id']}/statistics", 200, params={"period": period}))["data"]
    since = dt.datetime.fromisoformat(stats["since"])
    assert abs(dt.datetime.now(dt.UTC) - span - since) < dt.timedelta(minutes=1)
    until = dt.datetime.fromisoformat(stats["until"])
    assert until - since == span
    expected = expected_statistics(model, events, since, until)
    assert stats["period"] == period
    assert stats["total_requests"] == expected["total_requests"] > 0
    assert stats["success_rate"] == pytest.approx(expected["success_rate"], rel=1e-12)
    assert stats["avg_latency_ms"] == pytest.approx(expected["avg_latency_ms"], rel=1e-9)
    assert stats["p99_latency_ms"] == pytest.approx(expected["p99_latency_ms"], rel=1e-12)
    assert stats["total_tokens"] == expected["total_tokens"]
    assert isinstance(stats["total_tokens"], int)
    assert stats["error_breakdown"] == expected["error_breakdown"]


async def test_the_periods_narrow_the_counts(with_telemetry: Any) -> None:
    client, model, _ = with_telemetry
    path = f"{MODELS}/{model['id']}/statistics"
    totals = [
        (await call(client, "GET", path, 200, params={"period": p}))["data"]["total_requests"]
        for p in ("1h", "24h", "7d", "30d")
    ]
    assert totals == sorted(totals) and len(set(totals)) == 4


async def test_statistics_without_telemetry_are_empty(client: TestClient) -> None:
    model = await create_model(client, "Unused")
    stats = (await call(client, "GET", f"{MODELS}/{model['id']}/statistics", 200, params={"period": "7d"}))["data"]
    assert {k: v for k, v in stats.items() if k not in ("since", "until", "period")} == {
        "total_requests": 0,
        "success_rate": None,
        "avg_latency_ms": None,
        "p99_latency_ms": None,
        "total_tokens": 0,
        "error_breakdown": {},
    }


async def test_events_without_latency_leave_latency_null(client: TestClient) -> None:
    model = await create_model(client, "NoLatency")
    now = dt.datetime.now(dt.UTC)
    events = [
        {
            "event_name": ["crucible", "model", "inference"],
            "measurements": {"tokens": 5},
            "metadata": {"model_id": model["id"]},
            "timestamp": iso(now - dt.timedelta(minutes=i + 1)),
        }
        for i in range(3)
    ]
    await ingest(client, events)
    await wait_stored(client, 3)
    stats = (await call(client, "GET", f"{MODELS}/{model['id']}/statistics", 200, params={"period": "1h"}))["data"]
    assert (stats["total_requests"], stats["success_rate"], stats["total_tokens"]) == (3, 1.0, 15)
    assert stats["avg_latency_ms"] is None and stats["p99_latency_ms"] is None


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({"period": "2h"}, "period"), ({"period": ""}, "period"), ({"window": "1h"}, "window")],
)
async def test_bad_statistics_parameters_are_422(client: TestClient, params: dict[str, str], parameter: str) -> None:
    model = await create_model(client)
    problem = await error(client, "GET", f"{MODELS}/{model['id']}/statistics", 422, "validation_error", params=params)
    assert list(problem["details"]) == [parameter]
    if parameter == "period":
        assert "1h, 24h, 7d, 30d" in problem["details"]["period"][0]


async def test_a_filter_on_statistics_is_422(client: TestClient) -> None:
    model = await create_model(client)
    problem = await error(
        client,
        "GET",
        f"{MODELS}/{model['id']}/statistics",
        422,
        "validation_error",
        params={"filter[experiment_id]": "exp_1"},
    )
    assert "filter[experiment_id]" in problem["details"]
