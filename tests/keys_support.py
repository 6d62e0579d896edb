"""Helpers for the tests of API keys, sessions and rate limits."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.http.appkeys import SETTINGS
from service.resources.credentials import SESSION_COOKIE
from tests.support import eventually

KEYS_URL = "/api/v1/api-keys"
SESSIONS_URL = "/api/v1/sessions"
EVENTS_URL = "/api/v1/telemetry/events"
EXPERIMENTS_URL = "/api/v1/experiments"
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


async def create_key(client: TestClient, *scopes: str, name: str = "test key", **rate_limits: int) -> dict[str, Any]:
    """Create a key as the admin `client`; returns the created key, its `secret` included."""
    body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if rate_limits:
        body["rate_limits"] = rate_limits
    answer = await client.post(KEYS_URL, json={"api_key": body})
    assert answer.status == 201, await answer.text()
    key: dict[str, Any] = (await answer.json())["data"]
    assert key["secret"]
    return key


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def session_cookie(token: str, client: TestClient | None = None) -> dict[str, str]:
    """The cookie header of a session; with `client`, also the Origin a page of that server sends."""
    headers = {"Cookie": f"{SESSION_COOKIE}={token}"}
    if client is not None:
        headers["Origin"] = own_origin(client)
    return headers


def own_origin(client: TestClient) -> str:
    """The origin of the test server's pages, as a browser names it."""
    url = client.make_url("/")
    return f"{url.scheme}://{url.host}:{url.port}"


def event(experiment_id: str = "exp_rate", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_name": ["crucible", "model", "inference"],
        "measurements": {"duration_ms": 12.5},
        "metadata": {"experiment_id": experiment_id, "model": "gpt-test"},
    }
    base.update(overrides)
    return base


def batch(size: int, experiment_id: str = "exp_rate") -> dict[str, Any]:
    return {"events": [event(experiment_id) for _ in range(size)]}


def data_dir_of(client: TestClient) -> Path:
    return client.app[SETTINGS].data_path


def log_values(data_dir: Path, topic: str | None = None) -> list[bytes]:
    """The values of the embedded log's records (of `topic`, or all), read from its file."""
    with sqlite3.connect(data_dir / "log.sqlite3") as conn:
        if topic is None:
            rows = conn.execute("SELECT value FROM records ORDER BY topic, offset").fetchall()
        else:
            rows = conn.execute("SELECT value FROM records WHERE topic = ? ORDER BY offset", (topic,)).fetchall()
    return [bytes(value) for (value,) in rows]


async def stored_events(client: TestClient, experiment_id: str) -> int:
    """How many events of `experiment_id` the warehouse holds now (as the admin `client`)."""
    params = {"agg": "count", "filter[experiment_id]": experiment_id}
    answer = await client.get("/api/v1/telemetry/aggregate", params=params)
    assert answer.status == 200, await answer.text()
    return sum(int(point["count"]) for point in (await answer.json())["data"])


async def settled_events(client: TestClient, experiment_id: str) -> int:
    """How many events of `experiment_id` are stored once everything appended so far is: a marker
    batch appended now (as the admin) reaches the warehouse after every earlier record of the log."""
    marker = "exp_marker_" + uuid.uuid4().hex[:8]
    assert (await client.post(EVENTS_URL, json=batch(1, marker))).status == 202

    async def marker_stored() -> bool:
        return await stored_events(client, marker) == 1

    await eventually(marker_stored)
    return await stored_events(client, experiment_id)


async def crucible(*args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run `crucible ARGS` as a child process without blocking the event loop: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
