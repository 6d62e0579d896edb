"""Hugging Face Transformers reports through CrucibleCallback: a tiny BERT built from its
config (random weights, nothing downloaded) trained on CPU for a few steps against the
in-process service, then the run as every run endpoint shows it.

Training runs in a thread of its own (`asyncio.to_thread`) while the event loop serves
the client's requests, as in test_worker_runs.py; the run that ends with its process
trains in a child process.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when transformers is imported: never ask the Hub
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

pytest.importorskip("transformers")
pytest.importorskip("torch")  # the Trainer's own requirements, which transformers does not install
pytest.importorskip("accelerate")

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from crucible_client import Client
from crucible_client.integrations.huggingface import CrucibleCallback
from tests.client.training_support import downloaded_sha256, history, log_messages, settled_run
from tests.resource_helpers import call, create_experiment
from tests.support import eventually

STEPS, SAVE_STEPS, LOGGING_STEPS, BATCH, EXAMPLES = 8, 4, 2, 8, 32  # two epochs
SEQUENCE = 8
ROOT = Path(__file__).resolve().parents[2]  # where a child process imports `tests` from


class RandomTokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Sequences of random token ids, labelled by whether the first is above the middle."""

    def __init__(self, size: int, seed: int) -> None:
        self.ids = torch.randint(1, 100, (size, SEQUENCE), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.ids[index]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[0] > 50).long()}


class WeightsAtSave(TrainerCallback):
    """The SHA-256 of each checkpoint's weights as saved (save_total_limit deletes the older)."""

    def __init__(self) -> None:
        self.sha256: dict[int, str] = {}

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        weights = Path(args.output_dir or "") / f"checkpoint-{state.global_step}" / "model.safetensors"
        self.sha256[state.global_step] = hashlib.sha256(weights.read_bytes()).hexdigest()


class FailAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise RuntimeError(f"loss diverged at step {self.step}")


def trainer(output_dir: Path, callbacks: list[TrainerCallback]) -> Trainer:
    """A one-layer BERT of width 32 over a vocabulary of 100: 8 steps of 8 examples, logged
    every 2, evaluated and saved every 4, keeping one checkpoint on disk."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=SEQUENCE,
        num_labels=2,
    )
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        learning_rate=1e-3,
        logging_steps=LOGGING_STEPS,
        eval_strategy="steps",
        eval_steps=SAVE_STEPS,
        save_steps=SAVE_STEPS,
        save_total_limit=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return Trainer(
        model=BertForSequenceClassification(config),
        args=args,
        train_dataset=RandomTokens(EXAMPLES, seed=1),
        eval_dataset=RandomTokens(BATCH, seed=2),
        callbacks=callbacks,
    )


def train(url: str, key: str, experiment_id: str, workdir: Path) -> tuple[str, dict[int, str]]:
    """The run's id and the SHA-256 of each checkpoint's weights when it was saved."""
    weights = WeightsAtSave()
    with (
        Client(url, key, spool_dir=workdir / "spool", flush_interval=0.05) as client,
        CrucibleCallback(experiment_id, client, hyperparameters={"model": {"hidden_size": 32}}) as crucible,
    ):
        trainer(workdir / "out", [crucible, weights]).train()
    assert crucible.run is not None
    return crucible.run.id, weights.sha256


def train_until_it_fails(url: str, key: str, experiment_id: str, workdir: Path) -> str:
    """Training that raises inside `with CrucibleCallback(...)`: the run's id."""
    with Client(url, key, spool_dir=workdir / "spool", flush_interval=0.05) as client:
        with pytest.raises(RuntimeError, match="loss diverged"), CrucibleCallback(experiment_id, client) as crucible:
            trainer(workdir / "out", [crucible, FailAt(step=3)]).train()
        assert crucible.run is not None
        return crucible.run.id


def train_and_die(url: str, key: str, experiment_id: str, workdir: str) -> None:
    """In a child process: no `with` block, and the exception ends the interpreter."""
    client = Client(url, key, spool_dir=Path(workdir) / "spool", flush_interval=0.05)
    trainer(Path(workdir) / "out", [CrucibleCallback(experiment_id, client), FailAt(step=3)]).train()


async def test_a_transformers_training_is_a_run_with_its_metrics_log_and_checkpoints(
    client: TestClient, tmp_path: Path
) -> None:
    experiment = await create_experiment(client)
    url = str(client.make_url("/")).rstrip("/")
    run_id, saved = await asyncio.to_thread(train, url, client.secret, experiment["id"], tmp_path)

    run = await settled_run(client, run_id, "completed", log_lines=4, checkpoints=2)
    hyperparameters = run["hyperparameters"]
    assert hyperparameters["model"] == {"hidden_size": 32}
    assert {name: hyperparameters[name] for name in ("max_steps", "learning_rate", "per_device_train_batch_size")} == {
        "max_steps": STEPS,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": BATCH,
    }
    assert run["progress"] == 1.0
    assert run["metrics"]["current_step"] == STEPS and run["metrics"]["current_epoch"] == 2
    assert {"loss", "learning_rate", "grad_norm", "eval_loss", "train_loss", "train_runtime"} <= set(run["metrics"])
    # The Trainer's global step, and its epoch as the fraction it is.
    assert await history(client, run_id, "loss") == [(2, 0.5), (4, 1), (6, 1.5), (8, 2)]
    assert await history(client, run_id, "eval_loss") == [(4, 1), (8, 2)]

    assert await log_messages(client, run_id) == [
        f"training started: {STEPS} steps, 2 epochs",
        "checkpoint-4 saved at epoch 1: uploading model.safetensors",
        "checkpoint-8 saved at epoch 2: uploading model.safetensors",
        f"training ended at step {STEPS}, epoch 2",
    ]

    # checkpoint-4 was deleted (save_total_limit=1) once checkpoint-8 was saved: what was
    # uploaded is still the file as the Trainer saved it.
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["checkpoint-8"]
    first, second = run["checkpoints"]
    assert [first["step"], second["step"]] == [4, 8] and [first["epoch"], second["epoch"]] == [1, 2]
    assert first["path"] == second["path"] == "model.safetensors"
    eval_losses = (await call(client, "GET", f"/api/v1/runs/{run_id}/metrics/eval_loss", 200))["data"]["points"]
    assert [first["eval_loss"], second["eval_loss"]] == [point["value"] for point in eval_losses]
    for checkpoint in (first, second):
        assert checkpoint["sha256"] == saved[checkpoint["step"]]
        assert await downloaded_sha256(client, checkpoint) == checkpoint["sha256"]


async def test_training_that_raises_in_the_with_block_fails_its_run(client: TestClient, tmp_path: Path) -> None:
    experiment = await create_experiment(client)
    url = str(client.make_url("/")).rstrip("/")
    run_id = await asyncio.to_thread(train_until_it_fails, url, client.secret, experiment["id"], tmp_path)

    run = await settled_run(client, run_id, "failed", log_lines=2, checkpoints=0)
    assert run["error"] == "RuntimeError: loss diverged at step 3"
    assert (await log_messages(client, run_id))[-1] == "training failed: RuntimeError: loss diverged at step 3"
    assert run["metrics"]["current_step"] == 2  # the last log before the exception


async def test_a_process_that_dies_of_an_exception_fails_its_run(client: TestClient, tmp_path: Path) -> None:
    experiment = await create_experiment(client)
    url = str(client.make_url("/")).rstrip("/")
    arguments = [url, client.secret, experiment["id"], str(tmp_path)]
    script = f"from tests.client.test_huggingface import train_and_die; train_and_die(*{arguments!r})"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(child.communicate(), timeout=120)
    assert child.returncode == 1 and b"RuntimeError: loss diverged at step 3" in stderr

    async def one_run() -> bool:
        body = await call(client, "GET", f"/api/v1/experiments/{experiment['id']}/runs", 200)
        return len(body["data"]) == 1

    await eventually(one_run)
    [listed] = (await call(client, "GET", f"/api/v1/experiments/{experiment['id']}/runs", 200))["data"]
    run = await settled_run(client, listed["id"], "failed", log_lines=2, checkpoints=0)
    assert run["error"] == "RuntimeError: loss diverged at step 3"
