"""A worker trains a run through the Python client; every run endpoint shows exactly what it sent.

The client's threads talk HTTP to the in-process service, so the worker runs in a
thread of its own (`asyncio.to_thread`) while the event loop serves it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from crucible_client import Client
from service.http.appkeys import PROJECTOR
from tests.resource_helpers import call, create_experiment, get_experiment
from tests.support import ServerProcess, eventually, free_port

STEPS, STEPS_PER_EPOCH = 60, 20
CHECKPOINT_BYTES = 3 * 1024 * 1024 + 17


def train(url: str, key: str, experiment_id: str, spool: Path, checkpoint: Path) -> str:
    """A small training loop: metrics every step, a log line per epoch at each level, one checkpoint."""
    checkpoint.write_bytes(os.urandom(CHECKPOINT_BYTES))
    with Client(url, key, spool_dir=spool, flush_interval=0.05) as client:
        run = client.start_run(experiment_id, {"learning_rate": 0.01, "layers": 4}, total_steps=STEPS)
        for step in range(1, STEPS + 1):
            epoch = (step - 1) // STEPS_PER_EPOCH + 1
            run.log_metrics(step, epoch=epoch, progress=step / STEPS, loss=1.0 / step, accuracy=step / 100)
            if step % STEPS_PER_EPOCH == 0:
                for level in ("debug", "info", "warning", "error"):
                    run.log(level, f"epoch {epoch} {level}")
        run.checkpoint(checkpoint, epoch=3, accuracy=0.6).result(timeout=60)
        run.complete()
        return run.id


async def test_a_worker_run_shows_on_every_run_endpoint(client: TestClient, tmp_path: Path) -> None:
    experiment = await create_experiment(client, config={"metric": "accuracy"})
    url = str(client.make_url("/")).rstrip("/")
    weights = tmp_path / "model.pt"
    run_id = await asyncio.to_thread(train, url, client.secret, experiment["id"], tmp_path / "spool", weights)

    async def stored() -> bool:  # the last events through the warehouse, the completion through the fold
        run = client.app[PROJECTOR].state.runs.get(run_id)
        if run is None or run.status != "completed":
            return False
        logs = await call(client, "GET", f"/api/v1/runs/{run_id}/logs", 200)
        history = await call(client, "GET", f"/api/v1/runs/{run_id}/metrics/loss", 200)
        checkpoints = await call(client, "GET", f"/api/v1/runs/{run_id}/checkpoints", 200)
        reported = [c for c in checkpoints["data"] if c["reported_at"] is not None]  # its event, after the upload
        return len(logs["data"]) == 12 and history["data"]["total_points"] == STEPS and len(reported) == 1

    await eventually(stored, timeout=30)
    run = (await call(client, "GET", f"/api/v1/runs/{run_id}", 200))["data"]
    assert run["status"] == "completed" and run["progress"] == 1.0
    assert run["hyperparameters"] == {"learning_rate": 0.01, "layers": 4}
    assert run["metrics"] == {"loss": 1.0 / STEPS, "accuracy": STEPS / 100, "current_epoch": 3, "current_step": 60}
    history = (await call(client, "GET", f"/api/v1/runs/{run_id}/metrics/accuracy", 200))["data"]
    assert [(p["step"], p["value"]) for p in history["points"]] == [(s, s / 100) for s in range(1, STEPS + 1)]
    errors = (await call(client, "GET", f"/api/v1/runs/{run_id}/logs", 200, params={"level": "error"}))["data"]
    assert [line["message"] for line in errors] == ["epoch 1 error", "epoch 2 error", "epoch 3 error"]
    tail = (await call(client, "GET", f"/api/v1/runs/{run_id}/logs", 200, params={"tail": "2"}))["data"]
    assert [line["message"] for line in tail] == ["epoch 3 warning", "epoch 3 error"]

    [checkpoint] = run["checkpoints"]
    content = weights.read_bytes()
    assert checkpoint["epoch"] == 3 and checkpoint["accuracy"] == 0.6 and checkpoint["uploaded"] is True
    assert checkpoint["size"] == len(content) and checkpoint["sha256"] == hashlib.sha256(content).hexdigest()
    download = await client.get(checkpoint["download_url"])
    assert download.status == 200 and await download.read() == content
    ranged = await client.get(checkpoint["download_url"], headers={"Range": "bytes=1000-1999"})
    assert ranged.status == 206 and await ranged.read() == content[1000:2000]

    detail = await get_experiment(client, experiment["id"])
    assert detail["runs"] == [{"id": run_id, "status": "completed", "progress": 1.0}]
    assert detail["results_summary"]["best_accuracy"] == STEPS / 100


def test_the_demo_fills_an_experiment_with_runs(tmp_path: Path) -> None:
    """`crucible demo` against a real server: an experiment, its workers' runs, one of them failed."""
    server = ServerProcess(["serve", "--data-dir", str(tmp_path / "data")], free_port(), log=tmp_path / "serve.log")
    server.start()
    try:
        key = (tmp_path / "data" / "admin.key").read_text().strip()
        demo = subprocess.run(
            [sys.executable, "-m", "service", "demo", "--url", server.url, "--key", key, "--seconds", "4"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CRUCIBLE_SPOOL_DIR": str(tmp_path / "spool")},  # the spool stays in the test's dir
        )
        assert demo.returncode == 0, demo.stderr
        experiment_id = demo.stdout.split("experiment ")[1].split(":")[0]
        request = urllib.request.Request(
            f"{server.url}/api/v1/experiments/{experiment_id}", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request) as answer:
            experiment: dict[str, Any] = json.load(answer)["data"]
        assert experiment["status"] == "completed"
        assert sorted(run["status"] for run in experiment["runs"]) == ["completed", "completed", "failed"]
        assert experiment["results_summary"]["total_runs"] == 3
    finally:
        server.kill()
