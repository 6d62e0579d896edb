"""What the framework integrations' tests share: waiting until a trained run is all in the
service (its end through the fold, its events through the warehouse, its checkpoints
uploaded and reported), then reading it as the API answers."""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp.test_utils import TestClient

from service.http.appkeys import PROJECTOR
from tests.resource_helpers import call
from tests.support import eventually


async def settled_run(
    client: TestClient, run_id: str, status: str, log_lines: int, checkpoints: int, timeout: float = 30
) -> dict[str, Any]:
    """`GET /runs/:id` once the run has `status`, `log_lines` lines and `checkpoints`
    checkpoints both uploaded and reported."""

    async def stored() -> bool:
        run = client.app[PROJECTOR].state.runs.get(run_id)
        if run is None or run.status != status:
            return False
        logs = await call(client, "GET", f"/api/v1/runs/{run_id}/logs", 200)
        listed = (await call(client, "GET", f"/api/v1/runs/{run_id}/checkpoints", 200))["data"]
        done = [c for c in listed if c["uploaded"] and c["reported_at"] is not None]
        return len(logs["data"]) == log_lines and len(done) == checkpoints

    await eventually(stored, timeout=timeout)
    run: dict[str, Any] = (await call(client, "GET", f"/api/v1/runs/{run_id}", 200))["data"]
    return run


async def log_messages(client: TestClient, run_id: str) -> list[str]:
    return [line["message"] for line in (await call(client, "GET", f"/api/v1/runs/{run_id}/logs", 200))["data"]]


async def history(client: TestClient, run_id: str, metric: str) -> list[tuple[int, float]]:
    """(step, epoch) of each point of a metric's history."""
    points = (await call(client, "GET", f"/api/v1/runs/{run_id}/metrics/{metric}", 200))["data"]["points"]
    return [(point["step"], point["epoch"]) for point in points]


async def downloaded_sha256(client: TestClient, checkpoint: dict[str, Any]) -> str:
    answer = await client.get(checkpoint["download_url"])
    assert answer.status == 200, await answer.text()
    return hashlib.sha256(await answer.read()).hexdigest()
