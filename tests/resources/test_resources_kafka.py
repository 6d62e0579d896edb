"""Two API processes on one Kafka-protocol broker share the resources log.

A change made through one is visible through the other within a second; two
concurrent `start`s of one experiment sent to the two processes give exactly one
200 and one 409, because the fold of the one log accepts only the first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support import Http, ServerProcess, create_admin_key, free_port, tansu_broker

pytestmark = pytest.mark.kafka

VISIBLE_WITHIN_SECONDS = 1.0


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    """`serve --kafka` twice on a broker of this module's own (the second without a writer), and an admin key.

    One pair for the module's tests (starting it takes 7-8 s): each test makes experiments,
    keys and runs of its own, and reads only those.
    """
    tmp_path = tmp_path_factory.mktemp("two_servers")
    with tansu_broker() as bootstrap:
        log_args = ["--kafka", bootstrap, "--no-kafka-idempotence", "--kafka-partitions", "2"]
        secret = create_admin_key(log_args)
        servers = [
            ServerProcess(
                ["serve", *log_args, "--data-dir", str(tmp_path / name), *extra],
                free_port(),
                log=tmp_path / f"{name}.log",
            )
            for name, extra in (("a", []), ("b", ["--no-writer"]))
        ]
        try:
            for server in servers:
                server.start()
            yield servers[0], servers[1], secret
        finally:
            for server in servers:
                server.kill()
            for server in servers:
                if server.log is not None and server.log.exists():
                    print(f"--- {server.log.name} ---\n{server.log.read_text()[-3000:]}")


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Http(session)


async def seconds_until(check: Any, timeout: float = 10.0) -> float:
    """How long until `check()` is true (fails after `timeout`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, f"not true after {timeout} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_change_through_one_process_is_visible_through_the_other(two_servers: Any, http: Http) -> None:
    a, b, secret = two_servers
    http.headers = {"Authorization": f"Bearer {secret}"}
    async with http.post(a.url + "/api/v1/experiments", json={"experiment": {"name": "shared"}}) as answer:
        assert answer.status == 201, await answer.text()
        experiment_id = (await answer.json())["data"]["id"]

    async def visible_on_b() -> bool:
        async with http.get(f"{b.url}/api/v1/experiments/{experiment_id}") as answer:
            return answer.status == 200

    assert await seconds_until(visible_on_b) < VISIBLE_WITHIN_SECONDS


async def test_concurrent_starts_through_two_processes_give_one_200_and_one_409(two_servers: Any, http: Http) -> None:
    a, b, secret = two_servers
    http.headers = {"Authorization": f"Bearer {secret}"}
    for attempt in range(3):
        async with http.post(a.url + "/api/v1/experiments", json={"experiment": {"name": f"race {attempt}"}}) as answer:
            experiment_id = (await answer.json())["data"]["id"]

        url = f"/api/v1/experiments/{experiment_id}"

        async def visible_on_b(url: str = url) -> bool:
            async with http.get(b.url + url) as answer:
                return answer.status == 200

        await seconds_until(visible_on_b)

        async def start(server: ServerProcess, url: str = url) -> tuple[int, dict[str, Any]]:
            async with http.post(f"{server.url}{url}/start") as answer:
                return answer.status, await answer.json()

        (first, body_a), (second, body_b) = await asyncio.gather(start(a), start(b))
        assert sorted([first, second]) == [200, 409], (body_a, body_b)
        refused = body_a if first == 409 else body_b
        assert refused["error"]["code"] == "conflict"
        assert "running" in refused["error"]["message"]


async def test_a_key_revoked_through_one_process_is_refused_by_the_other_within_a_second(
    two_servers: Any, http: Http
) -> None:
    a, b, secret = two_servers
    admin = {"Authorization": f"Bearer {secret}"}
    body = {"api_key": {"name": "short-lived", "scopes": ["read"]}}
    async with http.post(a.url + "/api/v1/api-keys", json=body, headers=admin) as answer:
        assert answer.status == 201, await answer.text()
        created = (await answer.json())["data"]
    reader = {"Authorization": f"Bearer {created['secret']}"}

    async def accepted_by_b() -> bool:
        async with http.get(b.url + "/api/v1/experiments", headers=reader) as answer:
            return answer.status == 200

    await seconds_until(accepted_by_b)
    async with http.request("DELETE", f"{a.url}/api/v1/api-keys/{created['id']}", headers=admin) as answer:
        assert answer.status == 204

    async def refused_by_b() -> bool:
        async with http.get(b.url + "/api/v1/experiments", headers=reader) as answer:
            return answer.status == 401

    assert await seconds_until(refused_by_b) < VISIBLE_WITHIN_SECONDS


async def test_runs_reported_through_one_process_are_runs_on_the_other(two_servers: Any, http: Http) -> None:
    """Lifecycle telemetry ingested by b (no writer) becomes a run on both; a's writer stores
    the telemetry in a's warehouse (each process here has its own chDB), which gives the run its metrics."""
    a, b, secret = two_servers
    http.headers = {"Authorization": f"Bearer {secret}"}
    async with http.post(a.url + "/api/v1/experiments", json={"experiment": {"name": "runs"}}) as answer:
        experiment_id = (await answer.json())["data"]["id"]
    metadata = {"run_id": "run_k", "experiment_id": experiment_id}
    events = [
        {"event_name": ["crucible", "run", "started"], "metadata": metadata, "data": {"hyperparameters": {"lr": 3}}},
        {"event_name": ["crucible", "run", "progress"], "metadata": metadata, "measurements": {"loss": 0.5}},
        {"event_name": ["crucible", "run", "completed"], "metadata": metadata},
    ]

    async def visible_on_b() -> bool:
        return (await http.get(f"{b.url}/api/v1/experiments/{experiment_id}")).status == 200

    await seconds_until(visible_on_b)
    async with http.post(b.url + "/api/v1/telemetry/events", json={"events": events}) as answer:
        assert answer.status == 202, await answer.text()

    async def completed(server: ServerProcess, metrics: dict[str, float]) -> bool:
        async with http.get(f"{server.url}/api/v1/runs/run_k") as answer:
            if answer.status != 200:
                return False
            run = (await answer.json())["data"]
            return bool(
                run["status"] == "completed" and run["hyperparameters"] == {"lr": 3} and run["metrics"] == metrics
            )

    await seconds_until(lambda: completed(b, {}))
    await seconds_until(lambda: completed(a, {"loss": 0.5}), timeout=20)
