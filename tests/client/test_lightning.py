"""PyTorch Lightning reports through CrucibleLogger: a tiny model trained on CPU for a few
steps against the in-process service, then the run as every run endpoint shows it.

Training runs in a thread of its own (`asyncio.to_thread`) while the event loop serves
the client's requests, as in test_worker_runs.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

pytest.importorskip("lightning")

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from crucible_client import Client
from crucible_client.integrations.lightning import CrucibleLogger
from tests.client.training_support import downloaded_sha256, history, log_messages, settled_run
from tests.resource_helpers import create_experiment

BATCHES_PER_EPOCH, EPOCHS = 4, 2
STEPS = BATCHES_PER_EPOCH * EPOCHS


class TinyRegression(LightningModule):
    """A two-layer MLP learning the sum of four inputs; it raises at `fail_at_step`."""

    def __init__(self, hidden: int = 8, lr: float = 0.05, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.fail_at_step = fail_at_step

    def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
        if self.global_step == self.fail_at_step:
            raise RuntimeError(f"loss diverged at step {self.global_step}")
        inputs, targets = batch
        loss = F.mse_loss(self.net(inputs), targets)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_index: int) -> None:
        inputs, targets = batch
        self.log("val_loss", F.mse_loss(self.net(inputs), targets))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def fit(
    url: str, key: str, experiment_id: str, workdir: Path, fail_at_step: int | None = None
) -> tuple[str, Exception | None]:
    """Two epochs of four batches, every step logged, a checkpoint per epoch (and last.ckpt):
    the run's id, and the exception `trainer.fit` raised if it did."""
    torch.manual_seed(0)
    inputs = torch.randn(BATCHES_PER_EPOCH * 8, 4)
    data = TensorDataset(inputs, inputs.sum(dim=1, keepdim=True))
    with Client(url, key, spool_dir=workdir / "spool", flush_interval=0.05) as client:
        logger = CrucibleLogger(experiment_id, client)
        checkpoints = ModelCheckpoint(
            dirpath=workdir / "checkpoints", monitor="val_loss", save_top_k=-1, save_last=True
        )
        trainer = Trainer(
            max_epochs=EPOCHS,
            accelerator="cpu",
            devices=1,
            logger=logger,
            callbacks=[checkpoints],
            log_every_n_steps=1,
            num_sanity_val_steps=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=workdir,
        )
        model = TinyRegression(hidden=8, lr=0.05, fail_at_step=fail_at_step)
        try:
            trainer.fit(model, DataLoader(data, batch_size=8), DataLoader(data, batch_size=16))
        except Exception as error:
            return logger.version, error
        logger.log_hyperparams({"hidden": 8, "batch_size": 8})  # after the start: only the new one is named
        return logger.version, None


async def test_a_lightning_fit_is_a_run_with_its_metrics_log_and_checkpoints(
    client: TestClient, tmp_path: Path
) -> None:
    experiment = await create_experiment(client)
    url = str(client.make_url("/")).rstrip("/")
    run_id, error = await asyncio.to_thread(fit, url, client.secret, experiment["id"], tmp_path)
    assert error is None

    run = await settled_run(client, run_id, "completed", log_lines=5, checkpoints=2)
    assert run["hyperparameters"] == {"hidden": 8, "lr": 0.05, "fail_at_step": None}
    assert run["progress"] == 1.0
    assert run["metrics"]["current_epoch"] == EPOCHS - 1
    assert set(run["metrics"]) == {"train_loss", "val_loss", "current_epoch", "current_step"}
    # Lightning's step: the optimizer steps taken before the batch (0 for the first).
    assert await history(client, run_id, "train_loss") == [(step, step // BATCHES_PER_EPOCH) for step in range(STEPS)]
    assert [epoch for _, epoch in await history(client, run_id, "val_loss")] == list(range(EPOCHS))

    assert await log_messages(client, run_id) == [
        f"Lightning fit started: {STEPS} steps",
        "checkpoint epoch=0-step=4.ckpt saved at epoch 0, step 4",
        "checkpoint epoch=1-step=8.ckpt saved at epoch 1, step 8",
        f"Lightning fit ended at step {STEPS}",
        "hyperparameters logged after the run started were not recorded: batch_size",
    ]

    # One upload per epoch: last.ckpt, a copy of the epoch's checkpoint, is not sent again.
    first, second = run["checkpoints"]
    assert [first["path"], second["path"]] == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt"]
    assert [first["epoch"], second["epoch"]] == [0, 1] and [first["step"], second["step"]] == [4, 8]
    assert second["val_loss"] == run["metrics"]["val_loss"]
    for checkpoint in (first, second):
        local = (tmp_path / "checkpoints" / checkpoint["path"]).read_bytes()
        assert checkpoint["size"] == len(local)
        assert checkpoint["sha256"] == hashlib.sha256(local).hexdigest()
        assert await downloaded_sha256(client, checkpoint) == checkpoint["sha256"]
    assert not list((tmp_path / "checkpoints").glob(".crucible-upload-*"))  # staging links removed


async def test_a_lightning_fit_that_raises_fails_its_run_with_the_exception(client: TestClient, tmp_path: Path) -> None:
    experiment = await create_experiment(client)
    url = str(client.make_url("/")).rstrip("/")
    run_id, error = await asyncio.to_thread(fit, url, client.secret, experiment["id"], tmp_path, 5)
    assert isinstance(error, RuntimeError) and str(error) == "loss diverged at step 5"

    run = await settled_run(client, run_id, "failed", log_lines=3, checkpoints=1)
    assert run["error"] == "RuntimeError: loss diverged at step 5"
    assert (await log_messages(client, run_id))[-1] == "Lightning fit failed: RuntimeError: loss diverged at step 5"
    assert run["metrics"]["current_step"] == 4  # the last step logged before the exception
