"""Requests the experiment and model tests repeat: calls that check their status, errors in API.md's shape."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

EXPERIMENTS = "/api/v1/experiments"
MODELS = "/api/v1/models"


async def call(client: TestClient, method: str, path: str, status: int, **kwargs: Any) -> Any:
    """Send a request, check its status and return its JSON body (None when it has none)."""
    answer = await client.request(method, path, **kwargs)
    text = await answer.text()
    assert answer.status == status, f"{method} {path}: {answer.status} {text}"
    return await answer.json() if text else None


async def error(client: TestClient, method: str, path: str, status: int, code: str, **kwargs: Any) -> dict[str, Any]:
    """Send a request that must fail; check API.md's error shape and return `error`."""
    body = await call(client, method, path, status, **kwargs)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


async def assert_error(answer: aiohttp.ClientResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """`answer` is `status` in API.md's error shape: {"error": {"code", "message", "details"}}."""
    text = await answer.text()
    assert answer.status == status, text
    assert answer.content_type == "application/json", text
    error = (await answer.json())["error"]
    assert set(error) >= {"code", "message", "details"}, error
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


async def experiment_count(client: TestClient) -> int:
    return int((await (await client.get(EXPERIMENTS)).json())["meta"]["total"])


def idempotency(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def create_experiment(client: TestClient, name: str = "Ensemble test", **fields: Any) -> dict[str, Any]:
    body = await call(client, "POST", EXPERIMENTS, 201, json={"experiment": {"name": name, **fields}})
    return body["data"]


async def get_experiment(client: TestClient, experiment_id: str, **params: str) -> dict[str, Any]:
    return (await call(client, "GET", f"{EXPERIMENTS}/{experiment_id}", 200, params=params))["data"]


async def act(client: TestClient, experiment_id: str, action: str, status: int = 200, **kwargs: Any) -> Any:
    return await call(client, "POST", f"{EXPERIMENTS}/{experiment_id}/{action}", status, **kwargs)


async def list_experiments(client: TestClient, **params: Any) -> dict[str, Any]:
    return await call(client, "GET", EXPERIMENTS, 200, params={k: str(v) for k, v in params.items()})


async def create_model(client: TestClient, name: str = "GPT-4", **fields: Any) -> dict[str, Any]:
    body = await call(client, "POST", MODELS, 201, json={"model": {"name": name, **fields}})
    return body["data"]


async def list_models(client: TestClient, **params: Any) -> dict[str, Any]:
    return await call(client, "GET", MODELS, 200, params={k: str(v) for k, v in params.items()})


async def history(client: TestClient, path: str, **params: Any) -> dict[str, Any]:
    return await call(client, "GET", f"{path}/history", 200, params={k: str(v) for k, v in params.items()})


async def walk_with_cursor(client: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a list, following meta.next_cursor from the first page to the last."""
    query = {k: str(v) for k, v in params.items()}
    body = await call(client, "GET", path, 200, params=query)
    rows = list(body["data"])
    while body["meta"]["has_more"]:
        assert body["meta"]["next_cursor"], body["meta"]
        body = await call(client, "GET", path, 200, params={**query, "cursor": body["meta"]["next_cursor"]})
        assert body["meta"]["page"] is None
        rows.extend(body["data"])
    assert body["meta"]["next_cursor"] is None
    return rows
