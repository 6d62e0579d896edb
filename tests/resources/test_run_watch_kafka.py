"""Two API processes on one Kafka-protocol broker watch runs: one of them at a time, so a run that
falls silent is failed by exactly one record in `crucible.resources`, and revived by exactly one,
while both processes judge a round five times a second."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from schemas.resources import RunRecovered, RunTimedOut
from service.log.interface import RESOURCES_TOPIC
from service.log.kafka import KafkaLog
from service.resources.fold import event_decoder
from tests.support import ServerProcess, create_admin_key, eventually, free_port, tansu_broker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 2
# Joining a group on tansu takes ~5 s: the first process to join watches once it has.
LEADER_TIMEOUT = 40.0


@pytest.fixture
def broker() -> Iterator[str]:
    with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def two_servers(tmp_path: Path, broker: str) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    """`serve --kafka` twice on the broker, rounds every 0.2 s, and an admin key."""
    log_args = ["--kafka", broker, "--no-kafka-idempotence", "--kafka-partitions", str(PARTITIONS)]
    secret = create_admin_key(log_args)
    servers = [
        ServerProcess(
            ["serve", *log_args, "--data-dir", str(tmp_path / name), "--run-stale-check-seconds", "0.2", *extra],
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
async def session(two_servers: tuple[ServerProcess, ServerProcess, str]) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {two_servers[2]}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), headers=headers) as session:
        yield session


async def verdicts_in_log(broker: str, run_id: str) -> list[type]:
    """Every RunTimedOut and RunRecovered record of the run in crucible.resources, applied or not."""
    log = KafkaLog(broker, telemetry_partitions=PARTITIONS, idempotence=False)
    reader = await log.reader(RESOURCES_TOPIC)
    found: list[type] = []
    try:
        while records := await reader.read(timeout=1.0, max_records=10_000):
            for record in records:
                event = event_decoder.decode(record.value)
                if isinstance(event, RunTimedOut | RunRecovered) and event.run_id == run_id:
                    found.append(type(event))
    finally:
        await reader.stop()
    return found


async def status_everywhere(session: aiohttp.ClientSession, servers: list[ServerProcess], run_id: str) -> set[str]:
    statuses = set()
    for server in servers:
        async with session.get(f"{server.url}/api/v1/runs/{run_id}") as answer:
            statuses.add((await answer.json())["data"]["status"] if answer.status == 200 else str(answer.status))
    return statuses


async def watching(session: aiohttp.ClientSession, server: ServerProcess) -> bool:
    async with session.get(server.url + "/metrics") as answer:
        return "crucible_run_watching 1.0" in await answer.text()


async def test_one_process_watches_and_each_verdict_is_one_record(
    two_servers: tuple[ServerProcess, ServerProcess, str], session: aiohttp.ClientSession, broker: str
) -> None:
    a, b, _ = two_servers
    body = {"experiment": {"name": "silent", "config": {"run_stale_seconds": 2}}}
    async with session.post(a.url + "/api/v1/experiments", json=body) as answer:
        assert answer.status == 201, await answer.text()
        experiment_id = (await answer.json())["data"]["id"]
    metadata = {"experiment_id": experiment_id, "run_id": "run_k"}

    async def report(server: ServerProcess, action: str) -> None:
        event = {"event_name": ["crucible", "run", action], "metadata": metadata}
        async with session.post(server.url + "/api/v1/telemetry/events", json={"events": [event]}) as answer:
            assert answer.status == 202, await answer.text()

    async def seen_by_b() -> bool:
        async with session.get(f"{b.url}/api/v1/experiments/{experiment_id}") as answer:
            return answer.status == 200

    await eventually(seen_by_b)
    await report(b, "started")

    async def failed_on_both() -> bool:
        return await status_everywhere(session, [a, b], "run_k") == {"failed"}

    await eventually(failed_on_both, timeout=LEADER_TIMEOUT, interval=0.2)
    assert [await watching(session, a), await watching(session, b)].count(True) == 1
    await asyncio.sleep(1.0)  # five more rounds of each process
    assert await verdicts_in_log(broker, "run_k") == [RunTimedOut]

    await report(a, "progress")

    async def running_on_both() -> bool:
        return await status_everywhere(session, [a, b], "run_k") == {"running"}

    await eventually(running_on_both, timeout=10, interval=0.1)
    await report(b, "completed")  # so that it cannot fall silent again while the log is read
    await asyncio.sleep(1.0)
    assert await verdicts_in_log(broker, "run_k") == [RunTimedOut, RunRecovered]
