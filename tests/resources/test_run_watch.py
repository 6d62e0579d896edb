"""Runs whose worker fell silent, through the whole service on the embedded log and chDB: the run
watch fails them, the API and a live channel show it, a report from the worker revives them,
and each verdict is one event in the log. The limits are a few seconds, so each test takes seconds."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from schemas.resources import RunRecovered, RunTimedOut
from service.http.appkeys import LOG
from service.log.interface import RESOURCES_TOPIC
from service.resources.fold import event_decoder
from service.resources.run_silence import LIMIT_RULE
from service.settings import SettingsError, load
from tests.live_support import PhoenixClient, ingest, socket_url
from tests.resource_helpers import EXPERIMENTS, call, create_experiment, error
from tests.support import eventually

CHECK_SECONDS = 0.1  # a round of the watch: the tests wait for verdicts to show, not for set times
RUNS = "/api/v1/runs"


def report(
    experiment_id: str, run_id: str, action: str, measurements: dict[str, float] | None = None, **metadata: str
) -> dict[str, Any]:
    """A worker's `crucible.run.<action>` event."""
    return {
        "event_name": ["crucible", "run", action],
        "measurements": measurements or {},
        "metadata": {"experiment_id": experiment_id, "run_id": run_id, **metadata},
    }


async def run_of(client: TestClient, run_id: str) -> dict[str, Any]:
    return (await call(client, "GET", f"{RUNS}/{run_id}", 200))["data"]  # type: ignore[no-any-return]


async def until_status(client: TestClient, run_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
    async def reached() -> bool:
        return (await run_of(client, run_id))["status"] == status

    await eventually(reached, timeout=timeout, interval=0.05)
    return await run_of(client, run_id)


async def verdicts_in_log(client: TestClient, run_id: str) -> list[type]:
    """Every RunTimedOut and RunRecovered record of the run in crucible.resources, applied or not."""
    reader = await client.app[LOG].reader(RESOURCES_TOPIC)
    found: list[type] = []
    try:
        while records := await reader.read(timeout=0.1, max_records=10_000):
            for record in records:
                event = event_decoder.decode(record.value)
                if isinstance(event, RunTimedOut | RunRecovered) and event.run_id == run_id:
                    found.append(type(event))
    finally:
        await reader.stop()
    return found


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[TestClient], Awaitable[PhoenixClient]]]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:

        async def open_socket(client: TestClient) -> PhoenixClient:
            return PhoenixClient(await session.ws_connect(socket_url(client, client.secret)))

        yield open_socket


async def test_a_silent_run_fails_live_and_runs_again_when_its_worker_reports(
    app_client: Any, connect: Callable[[TestClient], Awaitable[PhoenixClient]]
) -> None:
    client = await app_client(run_stale_seconds=2, run_stale_check_seconds=CHECK_SECONDS)
    experiment = await create_experiment(client)
    topic = f"experiment:{experiment['id']}"
    socket = await connect(client)
    await socket.join(topic)

    before = dt.datetime.now(dt.UTC)
    await ingest(client, report(experiment["id"], "run_w", "started"))
    assert (await socket.push(topic, "run_status_changed")).payload["status"] == "running"
    failed = (await socket.push(topic, "run_status_changed")).payload
    assert failed["run_id"] == "run_w" and failed["status"] == "failed"
    assert failed["error"] == "no telemetry for 2 s"
    # Not before its limit (the log's times are whole milliseconds).
    assert dt.datetime.fromisoformat(failed["completed_at"]) - before > dt.timedelta(seconds=1.99)

    run = await run_of(client, "run_w")
    assert (run["status"], run["error"]) == ("failed", "no telemetry for 2 s")
    assert run["completed_at"] == failed["completed_at"]
    listed = (await call(client, "GET", RUNS, 200, params={"filter[status]": "failed"}))["data"]
    assert [r["id"] for r in listed] == ["run_w"]

    await ingest(client, report(experiment["id"], "run_w", "progress", {"progress": 0.5}))
    again = (await socket.push(topic, "run_status_changed")).payload
    assert again == {"run_id": "run_w", "status": "running", "error": None, "completed_at": None}
    run = await run_of(client, "run_w")  # within the 2 s before it could fall silent again
    assert (run["status"], run["error"], run["completed_at"]) == ("running", None, None)

    await ingest(client, report(experiment["id"], "run_w", "completed"))
    assert (await socket.push(topic, "run_status_changed")).payload["status"] == "completed"
    history = (await call(client, "GET", f"{EXPERIMENTS}/{experiment['id']}/history", 200))["data"]
    assert [entry["type"] for entry in history if entry["type"].startswith("Run")] == [
        "RunStarted",
        "RunTimedOut",
        "RunRecovered",
        "RunCompleted",
    ]
    timed_out = next(entry for entry in history if entry["type"] == "RunTimedOut")
    assert timed_out["actor"] == "crucible:run-watch" and timed_out["changes"]["seconds"] == 2
    # Rounds went on every 0.1 s all along: each verdict is one record in the log.
    assert await verdicts_in_log(client, "run_w") == [RunTimedOut, RunRecovered]


async def test_the_experiments_own_limit_overrides_the_servers(app_client: Any) -> None:
    client = await app_client(run_stale_seconds=1, run_stale_check_seconds=CHECK_SECONDS)
    limits = {"run_default": None, "run_own": 4, "run_never": 0}
    for run_id, limit in limits.items():
        config = {} if limit is None else {"run_stale_seconds": limit}
        experiment = await create_experiment(client, run_id, config=config)
        await ingest(client, report(experiment["id"], run_id, "started"))
    assert (await until_status(client, "run_default", "failed"))["error"] == "no telemetry for 1 s"
    assert (await run_of(client, "run_own"))["status"] == "running"  # 3 s to go
    assert (await until_status(client, "run_own", "failed"))["error"] == "no telemetry for 4 s"
    assert (await run_of(client, "run_never"))["status"] == "running"


async def test_any_telemetry_of_a_run_keeps_it_running(app_client: Any) -> None:
    """Log lines only (no lifecycle event after the start, nothing in crucible.resources): heard all the same."""
    client = await app_client(run_stale_seconds=2, run_stale_check_seconds=CHECK_SECONDS)
    experiment = await create_experiment(client)
    await ingest(client, *(report(experiment["id"], run_id, "started") for run_id in ("run_busy", "run_idle")))
    for step in range(16):  # a worker logging every 0.25 s for 4 s: twice its limit
        await ingest(client, report(experiment["id"], "run_busy", "log", level="info", message=f"step {step}"))
        await asyncio.sleep(0.25)
    assert (await run_of(client, "run_idle"))["status"] == "failed"
    assert (await run_of(client, "run_busy"))["status"] == "running"
    assert await verdicts_in_log(client, "run_busy") == []


# -- the experiment's config: each refusal -----------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["300", 1.5, True, -1, 30 * 86_400 + 1, [300]],
    ids=["text", "fraction", "boolean", "negative", "over the maximum", "list"],
)
async def test_a_bad_limit_is_a_422_naming_the_field_on_create_and_update(client: TestClient, bad: Any) -> None:
    body = {"experiment": {"name": "E", "config": {"run_stale_seconds": bad, "dataset": "mmlu"}}}
    refused = await error(client, "POST", EXPERIMENTS, 422, "validation_error", json=body)
    assert refused["details"] == {"config.run_stale_seconds": [LIMIT_RULE]}
    assert refused["message"] == f"config.run_stale_seconds {LIMIT_RULE}"
    pending = await create_experiment(client)
    refused = await error(
        client, "PATCH", f"{EXPERIMENTS}/{pending['id']}", 422, "validation_error", json=body
    )  # fmt: skip
    assert refused["details"] == {"config.run_stale_seconds": [LIMIT_RULE]}
    assert (await call(client, "GET", f"{EXPERIMENTS}/{pending['id']}", 200))["data"]["config"] == {}


@pytest.mark.parametrize("good", [None, 0, 86_400])
async def test_a_valid_limit_is_kept_in_the_config(client: TestClient, good: Any) -> None:
    experiment = await create_experiment(client, config={"run_stale_seconds": good})
    assert experiment["config"] == {"run_stale_seconds": good}
    change = {"experiment": {"config": {"run_stale_seconds": 5}}}
    updated = await call(client, "PATCH", f"{EXPERIMENTS}/{experiment['id']}", 200, json=change)
    assert updated["data"]["config"] == {"run_stale_seconds": 5}


@pytest.mark.parametrize(
    ("name", "bad"),
    [("run_stale_seconds", "-1"), ("run_stale_seconds", "2592001"), ("run_stale_seconds", "soon"),
     ("run_stale_check_seconds", "0")],
)  # fmt: skip
def test_a_bad_server_setting_is_refused_at_start(name: str, bad: str) -> None:
    with pytest.raises(SettingsError, match="--" + name.replace("_", "-")):
        load({name: bad}, environ={})


def test_the_server_limit_comes_from_its_flag_or_the_environment() -> None:
    assert load(environ={}).run_stale_seconds == 300
    assert load(environ={"CRUCIBLE_RUN_STALE_SECONDS": "0"}).run_stale_seconds == 0
    assert load({"run_stale_seconds": "45"}, environ={}).run_stale_seconds == 45
