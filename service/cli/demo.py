"""`crucible demo`: an experiment with a few simulated workers, so a new user sees data at once.

Each worker trains a run for the demo's duration through the Python client for
workers: learning curves that flatten with noise, log lines at every level,
checkpoints (small files, uploaded), and model-inference telemetry; one run
fails part of the way. The experiment is created and started through the REST
API and reported completed at the end.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crucible_client import Client

DEFAULT_URL = "http://127.0.0.1:4000"
ADMIN_KEY_FILE = Path("data") / "admin.key"
CHECKPOINT_BYTES = 256 * 1024
MODELS = ("gpt-4", "claude-3", "llama-3-70b")


@dataclass(frozen=True)
class DemoOptions:
    url: str
    key: str
    workers: int = 3
    seconds: float = 120.0
    epochs: int = 20
    steps_per_epoch: int = 50
    seed: int = 7


def default_key() -> str | None:
    """The key from the environment, else the admin key the first `crucible serve` wrote here."""
    key = os.environ.get("CRUCIBLE_API_KEY")
    if key:
        return key
    return ADMIN_KEY_FILE.read_text().strip() if ADMIN_KEY_FILE.exists() else None


def _rest(options: DemoOptions, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        options.url.rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {options.key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def run_demo(options: DemoOptions) -> str:
    """Create and start an experiment, train its runs, report it completed; returns its id."""
    from crucible_client import Client  # the workers' client; the server's commands never load it

    experiment = _rest(
        options,
        "POST",
        "/api/v1/experiments",
        {
            "experiment": {
                "name": f"Demo: learning-rate sweep ({time.strftime('%H:%M:%S')})",
                "description": "Simulated by `crucible demo`.",
                "config": {"metric": "val_accuracy", "epochs": options.epochs, "models": list(MODELS)},
                "tags": ["demo"],
            }
        },
    )["data"]
    experiment_id = experiment["id"]
    _rest(options, "POST", f"/api/v1/experiments/{experiment_id}/start", {})
    print(f"experiment {experiment_id}: {options.workers} workers for {options.seconds:.0f} s", flush=True)
    # The client closes (and finishes its uploads) before the checkpoint files go.
    with tempfile.TemporaryDirectory() as scratch, Client(options.url, options.key) as client:
        workers = [
            threading.Thread(
                target=_train,
                args=(client, options, experiment_id, index, Path(scratch)),
                name=f"demo-worker-{index}",
            )
            for index in range(options.workers)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        client.log_event("crucible.experiment.completed", metadata={"experiment_id": experiment_id})
    print(f"done: {options.url.rstrip('/')}/api/v1/experiments/{experiment_id}", flush=True)
    return experiment_id


def _train(client: Client, options: DemoOptions, experiment_id: str, index: int, scratch: Path) -> None:
    rng = random.Random(options.seed * 1000 + index)
    learning_rate = [0.01, 0.003, 0.001, 0.0003][index % 4]
    hyperparameters = {"learning_rate": learning_rate, "batch_size": 32 * (1 + index % 2), "epochs": options.epochs}
    total_steps = options.epochs * options.steps_per_epoch
    run = client.start_run(experiment_id, hyperparameters, total_steps=total_steps)
    fails_at = options.epochs // 2 if index == 1 else None  # one run fails, as real ones do
    pause = options.seconds / total_steps
    speed = 0.15 + 30 * learning_rate  # how fast this run's curves flatten
    for epoch in range(1, options.epochs + 1):
        for step_in_epoch in range(options.steps_per_epoch):
            step = (epoch - 1) * options.steps_per_epoch + step_in_epoch + 1
            done = step / total_steps
            train_loss = 2.3 * math.exp(-speed * epoch * done * 4) + 0.05 + rng.gauss(0, 0.02)
            run.log_metrics(step, epoch=epoch, progress=done, train_loss=max(train_loss, 0.0))
            _inference(client, experiment_id, rng)
            time.sleep(pause)
        val_accuracy = min(0.97, 0.5 + 0.45 * (1 - math.exp(-speed * epoch)) + rng.gauss(0, 0.01))
        val_loss = 2.0 * math.exp(-speed * epoch) + 0.1 + rng.gauss(0, 0.02)
        run.log_metrics(step, epoch=epoch, val_accuracy=val_accuracy, val_loss=val_loss)
        run.log("debug", f"epoch {epoch}: {options.steps_per_epoch} steps, lr {learning_rate}")
        run.log("info", f"Epoch {epoch}/{options.epochs} - loss: {train_loss:.3f} - val_accuracy: {val_accuracy:.3f}")
        if rng.random() < 0.15:
            run.log("warning", "gradient norm above 10, clipped")
        if epoch == fails_at:
            run.log("error", "CUDA out of memory while allocating 2.00 GiB")
            run.fail("CUDA out of memory")
            return
        if epoch % 5 == 0 or epoch == options.epochs:
            path = scratch / f"run{index}_epoch_{epoch}.pt"
            path.write_bytes(rng.randbytes(CHECKPOINT_BYTES))
            run.checkpoint(path, epoch, val_accuracy=val_accuracy)
    run.complete()


def _inference(client: Client, experiment_id: str, rng: random.Random) -> None:
    """Now and then, a model call an evaluation made: latency, tokens, and the odd error."""
    if rng.random() > 0.2:
        return
    model = rng.choice(MODELS)
    failed = rng.random() < 0.03
    client.log_event(
        "crucible.model.inference",
        measurements={"latency_ms": rng.lognormvariate(5.3, 0.4), "tokens": rng.randint(50, 800)},
        metadata={
            "experiment_id": experiment_id,
            "model": model,
            "status": "error" if failed else "ok",
            **({"error_type": rng.choice(["timeout", "rate_limited"])} if failed else {}),
        },
    )
