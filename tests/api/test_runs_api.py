"""Runs reported by workers through telemetry, and the run endpoints that show them."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.http.appkeys import PROJECTOR
from service.http.params import Cursor, encode_cursor
from tests.resource_helpers import EXPERIMENTS, act, call, create_experiment, error, get_experiment
from tests.support import eventually

EVENTS = "/api/v1/telemetry/events"
RUNS = "/api/v1/runs"
T0 = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.UTC)
LEVELS = ("debug", "info", "warning", "error")


def iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def run_event(action: str, run_id: str, experiment_id: str, at: dt.datetime, **fields: Any) -> dict[str, Any]:
    metadata = {"run_id": run_id, "experiment_id": experiment_id, **fields.pop("metadata", {})}
    return {"event_name": ["crucible", "run", action], "timestamp": iso(at), "metadata": metadata, **fields}


async def send(client: TestClient, events: list[dict[str, Any]], **headers: str) -> dict[str, Any]:
    body = await call(client, "POST", EVENTS, 202, json={"events": events}, headers=headers)
    return body["data"]  # type: ignore[no-any-return]


async def wait_events(client: TestClient, experiment_id: str, total: int) -> None:
    async def stored() -> bool:
        answer = await client.get(
            "/api/v1/telemetry/aggregate", params={"agg": "count", "filter[experiment_id]": experiment_id}
        )
        return sum(p["count"] for p in (await answer.json())["data"]) == total

    await eventually(stored)


async def wait_run(client: TestClient, run_id: str, status: str | None = None) -> None:
    async def folded() -> bool:
        run = client.app[PROJECTOR].state.runs.get(run_id)
        return run is not None and (status is None or run.status == status)

    await eventually(folded)


def training(run_id: str, experiment_id: str, epochs: int = 5) -> list[dict[str, Any]]:
    """A run's whole life: start, progress per epoch, logs, checkpoints, completion."""
    events = [
        run_event(
            "started",
            run_id,
            experiment_id,
            T0,
            data={"hyperparameters": {"learning_rate": 0.001, "batch_size": 32, "epochs": epochs}},
        )
    ]
    for epoch in range(1, epochs + 1):
        at = T0 + dt.timedelta(minutes=epoch)
        measurements = {
            "step": epoch * 100,
            "epoch": epoch,
            "progress": epoch / epochs,
            "train_loss": 1.0 / epoch,
            "val_accuracy": 0.5 + epoch / 20,
        }
        events.append(run_event("progress", run_id, experiment_id, at, measurements=measurements))
        for offset, level in enumerate(LEVELS):
            events.append(
                run_event(
                    "log",
                    run_id,
                    experiment_id,
                    at + dt.timedelta(seconds=offset + 1),
                    metadata={"level": level, "message": f"epoch {epoch} {level}"},
                )
            )
        if epoch % 2 == 0:
            events.append(
                run_event(
                    "checkpoint",
                    run_id,
                    experiment_id,
                    at + dt.timedelta(seconds=10),
                    metadata={"checkpoint_id": f"ckpt_{epoch}", "path": f"/checkpoints/{run_id}/epoch_{epoch}.pt"},
                    measurements={"epoch": epoch, "val_accuracy": 0.5 + epoch / 20},
                )
            )
    events.append(run_event("completed", run_id, experiment_id, T0 + dt.timedelta(minutes=epochs, seconds=30)))
    return events


@pytest.fixture
async def trained(client: TestClient) -> tuple[TestClient, str]:
    """An experiment with a completed run, a failed run and a run that never said it started."""
    experiment = await create_experiment(client, config={"metric": "val_accuracy"})
    experiment_id = experiment["id"]
    events = training("run_done", experiment_id)
    events += [
        run_event("started", "run_failed", experiment_id, T0),
        run_event(
            "progress", "run_failed", experiment_id, T0 + dt.timedelta(minutes=1), measurements={"progress": 0.2}
        ),
        run_event("failed", "run_failed", experiment_id, T0 + dt.timedelta(minutes=2), metadata={"error": "CUDA OOM"}),
        run_event("progress", "run_quiet", experiment_id, T0 + dt.timedelta(minutes=1), measurements={"progress": 0.4}),
    ]
    result = await send(client, events)
    assert result["rejected"] == 0, result
    await wait_events(client, experiment_id, len(events))
    for run_id in ("run_done", "run_failed", "run_quiet"):
        await wait_run(client, run_id)
    return client, experiment_id


async def get_run(client: TestClient, run_id: str) -> dict[str, Any]:
    return (await call(client, "GET", f"{RUNS}/{run_id}", 200))["data"]  # type: ignore[no-any-return]


async def test_run_shows_what_the_worker_reported(trained: Any) -> None:
    client, experiment_id = trained
    run = await get_run(client, "run_done")
    assert run["id"] == "run_done" and run["experiment_id"] == experiment_id
    assert run["status"] == "completed" and run["progress"] == 1.0
    assert run["hyperparameters"] == {"learning_rate": 0.001, "batch_size": 32, "epochs": 5}
    assert run["metrics"] == {"current_epoch": 5, "current_step": 500, "train_loss": 0.2, "val_accuracy": 0.75}
    assert run["started_at"] == "2024-01-15T10:00:00Z"
    assert run["completed_at"] == "2024-01-15T10:05:30Z"
    assert run["error"] is None
    assert [c["id"] for c in run["checkpoints"]] == ["ckpt_2", "ckpt_4"]
    first = run["checkpoints"][0]
    assert first["epoch"] == 2 and first["val_accuracy"] == 0.6 and first["metrics"] == {"val_accuracy": 0.6}
    assert first["path"] == "/checkpoints/run_done/epoch_2.pt"
    assert first["uploaded"] is False and first["download_url"] is None
    listed = await call(client, "GET", f"{RUNS}/run_done/checkpoints", 200)
    assert listed["data"] == run["checkpoints"]
    assert listed["meta"] == {"total": 2, "page": 1, "per_page": 25, "next_cursor": None, "has_more": False}
    second = await call(client, "GET", f"{RUNS}/run_done/checkpoints", 200, params={"per_page": "1", "page": "2"})
    assert [c["id"] for c in second["data"]] == ["ckpt_4"] and second["meta"]["has_more"] is False
    first = await call(client, "GET", f"{RUNS}/run_done/checkpoints", 200, params={"per_page": "1"})
    assert first["meta"]["has_more"] is True
    after = await call(
        client,
        "GET",
        f"{RUNS}/run_done/checkpoints",
        200,
        params={"per_page": "1", "cursor": first["meta"]["next_cursor"]},
    )
    assert [c["id"] for c in after["data"]] == ["ckpt_4"]
    await error(client, "GET", f"{RUNS}/run_done/checkpoints", 422, "validation_error", params={"per_page": "0"})


async def test_failed_and_implicit_runs(trained: Any) -> None:
    client, _ = trained
    failed = await get_run(client, "run_failed")
    assert failed["status"] == "failed" and failed["error"] == "CUDA OOM" and failed["progress"] == 0.2
    assert failed["completed_at"] == "2024-01-15T10:02:00Z"
    quiet = await get_run(client, "run_quiet")  # never reported started: made by its first event
    assert quiet["status"] == "running" and quiet["progress"] == 0.4 and quiet["hyperparameters"] == {}
    assert quiet["started_at"] == "2024-01-15T10:01:00Z"


async def test_experiment_embeds_runs_results_and_progress(trained: Any) -> None:
    client, experiment_id = trained
    experiment = await get_experiment(client, experiment_id)
    assert experiment["status"] == "running"  # a worker started it
    assert experiment["runs"] == [
        {"id": "run_done", "status": "completed", "progress": 1.0},
        {"id": "run_failed", "status": "failed", "progress": 0.2},
        {"id": "run_quiet", "status": "running", "progress": 0.4},
    ]
    assert experiment["progress"] == pytest.approx((1.0 + 0.2 + 0.4) / 3)
    assert experiment["results_summary"] == {
        "best_accuracy": 0.75,
        "metric": "val_accuracy",
        "total_runs": 3,
        "completed_runs": 1,
        "failed_runs": 1,
    }


async def test_best_of_a_minimised_metric(client: TestClient) -> None:
    experiment = await create_experiment(client, config={"metric": "train_loss"})
    events = training("run_loss", experiment["id"])
    await send(client, events)
    await wait_events(client, experiment["id"], len(events))
    await wait_run(client, "run_loss", "completed")
    summary = (await get_experiment(client, experiment["id"]))["results_summary"]
    assert summary["metric"] == "train_loss" and summary["best_accuracy"] == 0.2


async def test_list_runs_filters_sorts_and_pages(trained: Any) -> None:
    client, experiment_id = trained
    other = await create_experiment(client, name="other")
    await send(client, [run_event("started", "run_other", other["id"], T0 + dt.timedelta(hours=1))])
    await wait_run(client, "run_other")
    everything = (await call(client, "GET", RUNS, 200))["data"]
    assert {r["id"] for r in everything} == {"run_other", "run_quiet", "run_failed", "run_done"}
    assert everything[0]["id"] == "run_other"  # newest start first by default
    completed = (await call(client, "GET", RUNS, 200, params={"filter[status]": "completed"}))["data"]
    assert [r["id"] for r in completed] == ["run_done"]
    assert completed[0]["metrics"]["val_accuracy"] == 0.75
    of_experiment = await call(client, "GET", f"{EXPERIMENTS}/{experiment_id}/runs", 200, params={"sort": "status"})
    assert [r["status"] for r in of_experiment["data"]] == ["completed", "failed", "running"]
    assert of_experiment["meta"]["total"] == 3
    filtered = await call(client, "GET", RUNS, 200, params={"filter[experiment_id]": other["id"]})
    assert [r["id"] for r in filtered["data"]] == ["run_other"]
    seen: list[str] = []
    params = {"per_page": "1", "sort": "created_at"}
    while True:
        page = await call(client, "GET", RUNS, 200, params=params)
        seen += [r["id"] for r in page["data"]]
        if not page["meta"]["has_more"]:
            break
        params["cursor"] = page["meta"]["next_cursor"]
    assert sorted(seen) == sorted(r["id"] for r in everything) and len(seen) == 4


async def test_list_errors(trained: Any) -> None:
    client, experiment_id = trained
    await error(client, "GET", RUNS, 422, "validation_error", params={"filter[status]": "paused"})
    await error(client, "GET", RUNS, 422, "validation_error", params={"filter[owner]": "x"})
    await error(client, "GET", RUNS, 422, "validation_error", params={"sort": "name"})
    await error(client, "GET", RUNS, 422, "validation_error", params={"cursor": "garbage"})
    await error(client, "GET", f"{EXPERIMENTS}/exp_missing/runs", 404, "not_found")
    await error(
        client,
        "GET",
        f"{EXPERIMENTS}/{experiment_id}/runs",
        422,
        "validation_error",
        params={"filter[experiment_id]": "exp_other"},
    )
    for path in ("", "/checkpoints", "/logs", "/metrics/loss"):
        await error(client, "GET", f"{RUNS}/run_missing{path}", 404, "not_found")


async def test_metric_history_keeps_every_point_up_to_max_points(trained: Any) -> None:
    client, _ = trained
    history = (await call(client, "GET", f"{RUNS}/run_done/metrics/val_accuracy", 200))["data"]
    assert history["run_id"] == "run_done" and history["name"] == "val_accuracy"
    assert history["total_points"] == 5 and history["downsampled"] is False
    assert [p["step"] for p in history["points"]] == [100, 200, 300, 400, 500]
    assert [p["epoch"] for p in history["points"]] == [1, 2, 3, 4, 5]
    assert [p["value"] for p in history["points"]] == pytest.approx([0.55, 0.6, 0.65, 0.7, 0.75])
    assert history["points"][0]["timestamp"] == "2024-01-15T10:01:00Z"
    empty = (await call(client, "GET", f"{RUNS}/run_done/metrics/nothing", 200))["data"]
    assert empty["points"] == [] and empty["total_points"] == 0


async def test_metric_history_downsampling_keeps_extremes(client: TestClient) -> None:
    experiment = await create_experiment(client)
    experiment_id = experiment["id"]
    values = [float(i % 7) for i in range(2000)]
    values[1234] = 1000.0  # a spike a chart must still show
    values[567] = -1000.0
    events = [
        run_event(
            "progress", "run_long", experiment_id, T0 + dt.timedelta(seconds=i), measurements={"step": i, "loss": v}
        )
        for i, v in enumerate(values)
    ]
    await send(client, events)
    await wait_events(client, experiment_id, len(events))
    await wait_run(client, "run_long")
    history = (await call(client, "GET", f"{RUNS}/run_long/metrics/loss", 200, params={"max_points": "100"}))["data"]
    points = history["points"]
    assert history["total_points"] == 2000 and history["downsampled"] is True
    assert 50 <= len(points) <= 100
    steps = [p["step"] for p in points]
    assert steps == sorted(steps)
    assert {p["value"] for p in points} >= {1000.0, -1000.0}
    assert all(values[p["step"]] == p["value"] for p in points)
    full = (await call(client, "GET", f"{RUNS}/run_long/metrics/loss", 200, params={"max_points": "5000"}))["data"]
    assert [p["value"] for p in full["points"]] == values
    for bad in ("1", "x", "1000000"):
        await error(client, "GET", f"{RUNS}/run_long/metrics/loss", 422, "validation_error", params={"max_points": bad})


async def test_metric_history_buckets_match_a_sort_in_python(client: TestClient) -> None:
    """Equal-count buckets over step order, each keeping its lowest and highest point, for points
    sent out of step order in many inserts (so the warehouse reads them from many parts)."""
    experiment_id = (await create_experiment(client))["id"]
    rng = random.Random(7)
    steps = list(range(1000))
    rng.shuffle(steps)
    values = {step: rng.random() for step in steps}  # distinct: one lowest and one highest per bucket
    for batch in range(10):
        chunk = steps[batch * 100 : (batch + 1) * 100]
        events = [
            run_event(
                "progress",
                "run_shuffled",
                experiment_id,
                T0 + dt.timedelta(seconds=step),
                measurements={"step": step, "loss": values[step]},
            )
            for step in chunk
        ]
        await send(client, events)
    await wait_events(client, experiment_id, len(steps))
    await wait_run(client, "run_shuffled")
    buckets = 50
    kept: set[int] = set()
    for bucket in range(buckets):
        members = [position for position in range(1000) if position * buckets // 1000 == bucket]
        kept.add(min(members, key=lambda position: values[position]))  # position == step here
        kept.add(max(members, key=lambda position: values[position]))
    history = (
        await call(client, "GET", f"{RUNS}/run_shuffled/metrics/loss", 200, params={"max_points": str(2 * buckets)})
    )["data"]
    assert [(p["step"], p["value"]) for p in history["points"]] == [(s, values[s]) for s in sorted(kept)]
    assert history["total_points"] == 1000 and history["downsampled"] is True


async def test_logs_by_level_since_and_tail(trained: Any) -> None:
    client, _ = trained
    path = f"{RUNS}/run_done/logs"
    everything = await call(client, "GET", path, 200)
    assert len(everything["data"]) == 20 and everything["meta"]["has_more"] is False
    assert everything["meta"] == {"total": 20, "page": None, "per_page": 100, "next_cursor": None, "has_more": False}
    assert everything["data"][0] == {
        "timestamp": "2024-01-15T10:01:01Z",
        "level": "debug",
        "message": "epoch 1 debug",
    }
    times = [line["timestamp"] for line in everything["data"]]
    assert times == sorted(times)
    warnings = (await call(client, "GET", path, 200, params={"level": "warning"}))["data"]
    assert {line["level"] for line in warnings} == {"warning", "error"} and len(warnings) == 10
    since = (await call(client, "GET", path, 200, params={"since": "2024-01-15T10:04:00Z"}))["data"]
    assert [line["message"] for line in since][:1] == ["epoch 4 debug"] and len(since) == 8
    tail = await call(client, "GET", path, 200, params={"tail": "3", "level": "info"})
    assert [line["message"] for line in tail["data"]] == ["epoch 5 info", "epoch 5 warning", "epoch 5 error"]
    assert (tail["meta"]["total"], tail["meta"]["per_page"], tail["meta"]["has_more"]) == (15, 3, False)
    first_page = await call(client, "GET", path, 200, params={"per_page": "3", "level": "warning"})
    assert first_page["meta"]["total"] == 10 and first_page["meta"]["has_more"] is True


async def test_log_cursor_walks_every_line_once(trained: Any) -> None:
    client, _ = trained
    path = f"{RUNS}/run_done/logs"
    seen: list[str] = []
    params = {"per_page": "3"}
    while True:
        page = await call(client, "GET", path, 200, params=params)
        seen += [line["message"] for line in page["data"]]
        if not page["meta"]["has_more"]:
            break
        params["cursor"] = page["meta"]["next_cursor"]
    assert len(seen) == 20 and len(set(seen)) == 20


async def test_logs_since_beyond_the_warehouse_range(trained: Any) -> None:
    """Found by the OpenAPI fuzzer: a `since` before DateTime64's range was a 503."""
    client, _ = trained
    path = f"{RUNS}/run_done/logs"
    every = await call(client, "GET", path, 200, params={"since": "2000-01-01T00:00:00Z"})
    for since in ("0744-07-14T20:28:59.81-20:16", "0001-01-01T00:00:00+01:00"):
        assert await call(client, "GET", path, 200, params={"since": since}) == every
    assert (await call(client, "GET", path, 200, params={"since": "9999-12-31T23:59:59-01:00"}))["data"] == []


async def test_log_errors(trained: Any) -> None:
    client, _ = trained
    path = f"{RUNS}/run_done/logs"
    for params in (
        {"level": "fatal"},
        {"since": "yesterday"},
        {"tail": "0"},
        {"tail": "x"},
        {"tail": "3", "cursor": "abc"},
        {"per_page": "0"},
        {"cursor": "garbage"},
        # A cursor of the right shape whose time is not one: it was a query the warehouse refused (503).
        {"cursor": encode_cursor(Cursor("timestamp", "0744-07-14 x", "evt_1", ""))},
        {"grep": "x"},
        {"filter[level]": "info"},  # logs take `level`, not filters
    ):
        await error(client, "GET", path, 422, "validation_error", params=params)


async def test_reserved_events_are_checked_at_ingest(client: TestClient) -> None:
    experiment = await create_experiment(client)
    experiment_id = experiment["id"]
    good = run_event("started", "run_ok", experiment_id, T0)
    bad = [
        {"event_name": ["crucible", "run", "started"], "metadata": {"experiment_id": experiment_id}},
        {"event_name": ["crucible", "run", "progress"], "metadata": {"run_id": "r1"}},
        run_event("log", "r1", experiment_id, T0, metadata={"message": "no level"}),
        run_event("log", "r1", experiment_id, T0, metadata={"level": "loud", "message": "x"}),
        run_event("checkpoint", "r1", experiment_id, T0, metadata={"checkpoint_id": "../../etc/passwd"}),
        run_event("started", "../escape", experiment_id, T0),
        run_event("started", "r1", experiment_id, T0, data={"hyperparameters": [1, 2]}),
        run_event("exploded", "r1", experiment_id, T0),
        {"event_name": ["crucible", "experiment", "completed"], "metadata": {}},
    ]
    result = await send(client, [good, *bad])
    assert result["accepted"] == 1 and result["rejected"] == len(bad)
    paths = [e["path"] for e in result["errors"]]
    assert paths == [
        "$.events[1].metadata.run_id",
        "$.events[2].metadata.experiment_id",
        "$.events[3].metadata.level",
        "$.events[4].metadata.level",
        "$.events[5].metadata.checkpoint_id",
        "$.events[6].metadata.run_id",
        "$.events[7].data.hyperparameters",
        "$.events[8].event_name",
        "$.events[9].metadata.experiment_id",
    ]
    body = await call(client, "POST", EVENTS, 422, json={"events": bad})
    assert body["error"]["code"] == "validation_error"


async def test_events_of_a_cancelled_or_unknown_experiment_change_nothing(client: TestClient) -> None:
    experiment = await create_experiment(client)
    experiment_id = experiment["id"]
    await act(client, experiment_id, "cancel")
    events = [
        run_event("started", "run_late", experiment_id, T0),
        run_event("started", "run_nowhere", "exp_unknown", T0),
    ]
    projector = client.app[PROJECTOR]
    before = projector.state.position
    result = await send(client, events)
    assert result["accepted"] == 2  # kept as telemetry
    await wait_events(client, experiment_id, 1)

    async def folded() -> bool:  # both starts were routed, and refused by the fold
        return projector.state.position >= before + 2

    await eventually(folded)
    assert "run_late" not in projector.state.runs and "run_nowhere" not in projector.state.runs
    assert (await get_experiment(client, experiment_id))["status"] == "cancelled"
    await error(client, "GET", f"{RUNS}/run_late", 404, "not_found")


async def test_deleting_an_experiment_deletes_its_runs(trained: Any) -> None:
    client, experiment_id = trained
    await call(client, "DELETE", f"{EXPERIMENTS}/{experiment_id}", 204)
    await error(client, "GET", f"{RUNS}/run_done", 404, "not_found")
    assert (await call(client, "GET", RUNS, 200))["data"] == []


async def test_workers_complete_or_fail_experiments(client: TestClient) -> None:
    done = await create_experiment(client, name="done")
    broken = await create_experiment(client, name="broken")
    await act(client, done["id"], "start")
    await send(
        client,
        [
            {"event_name": ["crucible", "experiment", "completed"], "metadata": {"experiment_id": done["id"]}},
            {
                "event_name": ["crucible", "experiment", "failed"],
                "metadata": {"experiment_id": broken["id"], "error": "data missing"},
            },
        ],
    )

    async def finished() -> bool:
        state = client.app[PROJECTOR].state
        return (
            state.experiments[done["id"]].status == "completed" and state.experiments[broken["id"]].status == "failed"
        )

    await eventually(finished)
    completed = await get_experiment(client, done["id"])
    assert completed["completed_at"] is not None and completed["progress"] == 1.0
    assert (await get_experiment(client, broken["id"]))["error"] == "data missing"
    await act(client, done["id"], "pause", 409)  # completed is final


async def test_repeated_lifecycle_telemetry_changes_a_run_once(client: TestClient) -> None:
    experiment = await create_experiment(client)
    experiment_id = experiment["id"]
    started = run_event("started", "run_twice", experiment_id, T0, id="evt-start")
    completed = run_event("completed", "run_twice", experiment_id, T0 + dt.timedelta(minutes=1), id="evt-done")
    later = run_event("completed", "run_twice", experiment_id, T0 + dt.timedelta(minutes=9), id="evt-done-2")
    await send(client, [started, completed])
    await send(client, [started, completed])  # a worker's retry without an Idempotency-Key
    await send(client, [later])
    await wait_events(client, experiment_id, 5)
    await wait_run(client, "run_twice", "completed")
    run = await get_run(client, "run_twice")
    assert run["completed_at"] == "2024-01-15T10:01:00Z"
    history = (await call(client, "GET", f"{EXPERIMENTS}/{experiment_id}/history", 200))["data"]
    assert [entry["type"] for entry in history] == ["ExperimentCreated", "RunStarted", "RunCompleted"]


async def test_a_late_start_fills_in_an_implicit_run(client: TestClient) -> None:
    experiment = await create_experiment(client)
    experiment_id = experiment["id"]
    await send(client, [run_event("log", "run_early", experiment_id, T0, metadata={"level": "info", "message": "hi"})])
    await wait_run(client, "run_early")
    await send(
        client,
        [
            run_event(
                "started", "run_early", experiment_id, T0 - dt.timedelta(seconds=5), data={"hyperparameters": {"lr": 1}}
            )
        ],
    )

    async def filled() -> bool:
        return client.app[PROJECTOR].state.runs["run_early"].hyperparameters == {"lr": 1}

    await eventually(filled)
    run = await get_run(client, "run_early")
    assert run["started_at"] == "2024-01-15T09:59:55Z" and run["status"] == "running"


async def test_run_shows_uploaded_checkpoints(trained: Any) -> None:
    client, _ = trained
    content = b"weights" * 1000
    path = f"{RUNS}/run_done/checkpoints"
    await call(client, "PUT", f"{path}/ckpt_4", 201, data=content)
    await call(client, "PUT", f"{path}/ckpt_extra", 201, data=b"x")
    listed = (await call(client, "GET", path, 200))["data"]
    assert [c["id"] for c in listed] == ["ckpt_2", "ckpt_4", "ckpt_extra"]  # uploaded, not reported: last
    assert listed[0]["uploaded"] is False
    uploaded = listed[1]
    assert uploaded["uploaded"] is True and uploaded["size"] == len(content) and uploaded["epoch"] == 4
    assert uploaded["download_url"] == f"{path}/ckpt_4/download"
    download = await client.get(uploaded["download_url"])
    assert download.status == 200 and await download.read() == content
    assert download.headers["ETag"].strip('"') == uploaded["sha256"]
    assert listed[2]["path"] is None and listed[2]["size"] == 1


async def test_events_of_one_batch_without_timestamps_keep_the_order_they_were_sent(client: TestClient) -> None:
    """They share the receive time; the log position and place in the record break the tie."""
    experiment_id = (await create_experiment(client, "Same instant"))["id"]
    events = [run_event("started", "run_tie", experiment_id, T0)]
    for i in range(30):
        level = LEVELS[i % 4]
        events.append(
            {
                "event_name": ["crucible", "run", "log"],
                "metadata": {
                    "run_id": "run_tie",
                    "experiment_id": experiment_id,
                    "level": level,
                    "message": f"line {i}",
                },
            }
        )
        events.append(
            {
                "event_name": ["crucible", "run", "progress"],
                "measurements": {"loss": float(100 - i)},
                "metadata": {"run_id": "run_tie", "experiment_id": experiment_id},
            }
        )
    for i in range(12):
        events.append(
            {
                "event_name": ["crucible", "run", "checkpoint"],
                "measurements": {"epoch": float(i)},
                "metadata": {"run_id": "run_tie", "experiment_id": experiment_id, "checkpoint_id": f"c{i}"},
            }
        )
    await send(client, events)
    await wait_events(client, experiment_id, len(events))
    await wait_run(client, "run_tie")
    path = f"{RUNS}/run_tie"
    logs = (await call(client, "GET", f"{path}/logs", 200))["data"]
    assert [line["message"] for line in logs] == [f"line {i}" for i in range(30)]
    tail = (await call(client, "GET", f"{path}/logs", 200, params={"tail": "5"}))["data"]
    assert [line["message"] for line in tail] == [f"line {i}" for i in range(25, 30)]
    paged: list[str] = []
    params = {"per_page": "7"}
    while True:
        page = await call(client, "GET", f"{path}/logs", 200, params=params)
        paged += [line["message"] for line in page["data"]]
        if not page["meta"]["has_more"]:
            break
        params["cursor"] = page["meta"]["next_cursor"]
    assert paged == [f"line {i}" for i in range(30)]
    run = (await call(client, "GET", path, 200))["data"]
    assert run["metrics"]["loss"] == 71.0  # the last one sent
    checkpoints = (await call(client, "GET", f"{path}/checkpoints", 200, params={"per_page": "100"}))["data"]
    assert [c["id"] for c in checkpoints] == [f"c{i}" for i in range(12)]
    history = (await call(client, "GET", f"{path}/metrics/loss", 200))["data"]["points"]
    assert [p["value"] for p in history] == [float(100 - i) for i in range(30)]


@pytest.mark.parametrize("cursor", ["x", "MTox", "WyJ0aW1lc3RhbXAiLCIyMDI0IiwiZXZ0XzEiLCIiXQ"])
async def test_a_log_cursor_that_is_not_ours_is_422(trained: Any, cursor: str) -> None:
    client, _ = trained
    problem = await error(client, "GET", f"{RUNS}/run_done/logs", 422, "validation_error", params={"cursor": cursor})
    assert "cursor" in problem["details"]
