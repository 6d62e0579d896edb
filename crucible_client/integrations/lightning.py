"""PyTorch Lightning: a logger that reports the training run to Crucible.

    from crucible_client import Client
    from crucible_client.integrations.lightning import CrucibleLogger

    trainer = Trainer(logger=CrucibleLogger("exp_abc123", Client(url, api_key)))

One logger is one run. It starts when Lightning starts a stage (right after it logs the
module's hyperparameters), takes Lightning's metrics with their step and epoch, uploads
every checkpoint Lightning's `ModelCheckpoint` writes, and ends with the stage: completed
on success, failed with the exception otherwise.
"""

from __future__ import annotations

import math
import sys
import time
import weakref
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.nn import Module

from crucible_client.client import Client
from crucible_client.integrations.staged_upload import upload_checkpoint
from crucible_client.integrations.values import as_number, json_safe, numbers_only
from crucible_client.run import Run, new_run_id

SUCCESS = "success"  # Lightning's status for a stage that ended normally


class CrucibleLogger(Logger):
    """`Trainer(logger=CrucibleLogger(experiment_id, client))`: the run of `experiment_id`.

    Without a client, one is made from CRUCIBLE_URL and CRUCIBLE_API_KEY when the run
    starts (only on the process of global rank 0, the only one that reports). Checkpoint
    files are uploaded in the background unless `upload_checkpoints` is False.
    """

    def __init__(self, experiment_id: str, client: Client | None = None, *, upload_checkpoints: bool = True) -> None:
        super().__init__()
        self.experiment_id = experiment_id
        self.upload_checkpoints = upload_checkpoints
        self._client = client
        # Known before the run starts: Lightning names its checkpoint directory after it.
        self._run_id = new_run_id()
        self._run: Run | None = None
        self._hyperparameters: dict[str, Any] = {}
        self._trainer: weakref.ref[Trainer] | None = None
        self._step = 0
        self._epoch: int | None = None
        # Files ModelCheckpoint still lists from before (restored with a checkpoint we
        # resumed from) are not this run's. Whole seconds: some file systems store no less.
        self._created_ns = int(time.time()) * 1_000_000_000
        self._uploaded: set[tuple[str, int]] = set()  # (real path, mtime) of each file sent
        self._uploaded_steps: set[int] = set()

    @property
    def name(self) -> str:
        return "crucible"

    @property
    def version(self) -> str:
        """The run's id (Lightning's default checkpoint directory is `crucible/<run id>/checkpoints`)."""
        return self._run_id

    @property
    @rank_zero_experiment
    def run(self) -> Run:
        """The Crucible run, started on first use: `self.logger.run.log("info", ...)` in a
        LightningModule (a stand-in that does nothing on processes of other ranks)."""
        return self._started()

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        given = json_safe(vars(params) if isinstance(params, Namespace) else dict(params))
        if self._run is None:
            self._hyperparameters.update(given)
            return
        # A run's hyperparameters travel with its start, which the service takes once. Each
        # stage logs the module's again: only new or changed ones are worth a word.
        recorded = self._hyperparameters
        changed = sorted(name for name, value in given.items() if name not in recorded or recorded[name] != value)
        if changed:
            names = ", ".join(changed)
            self._run.log("warning", f"hyperparameters logged after the run started were not recorded: {names}")

    @rank_zero_only
    def log_graph(self, model: Module, input_array: Tensor | None = None) -> None:
        """Lightning calls this when fit, validate or test starts, right after
        `log_hyperparams`: the run starts here, with every hyperparameter known."""
        trainer = _trainer_of(model)
        if trainer is None:
            return
        self._trainer = weakref.ref(trainer)
        stage = _stage(trainer)
        total_steps = _total_steps(trainer) if self._run is None else None
        run = self._started(total_steps)
        run.log("info", f"Lightning {stage} started" + (f": {total_steps} steps" if total_steps else ""))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = numbers_only(metrics)
        values.pop("step", None)  # Lightning takes a logged "step" as the step: it comes as `step`
        epoch = values.pop("epoch", None)  # Lightning adds the epoch to every set of metrics
        if epoch is not None:
            self._epoch = int(epoch)
        if step is not None:
            self._step = step
        self._started().log_metrics(self._step, epoch=self._epoch, **values)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """ModelCheckpoint calls this after each file it writes: upload what is new."""
        if not self.upload_checkpoints:
            return
        run = self._started()
        trainer = self._trainer() if self._trainer is not None else None
        step = trainer.global_step if trainer is not None else self._step
        epoch = trainer.current_epoch if trainer is not None else self._epoch or 0
        metrics = {"step": float(step)}
        score = as_number(checkpoint_callback.current_score)
        if checkpoint_callback.monitor and score is not None:
            metrics[checkpoint_callback.monitor] = score
        for path in self._new_files(checkpoint_callback, step):
            upload_checkpoint(run, path, path.parent, epoch, metrics)
            run.log("info", f"checkpoint {path.name} saved at epoch {epoch}, step {step}")

    def _new_files(self, callback: ModelCheckpoint, step: int) -> list[Path]:
        """The files the callback lists (best, top k, last) written since they were last
        uploaded. `last.ckpt` is the same model as the checkpoint saved just before it at
        that step, whether a link or a copy: it is sent only when it alone holds the step."""
        new = []
        candidates = [callback.best_model_path, *callback.best_k_models, callback.last_model_path]
        for name in dict.fromkeys(candidate for candidate in candidates if candidate):
            path = Path(name).resolve()  # a `last.ckpt` link counts as the file it points to
            if name == callback.last_model_path and step in self._uploaded_steps:
                continue
            try:
                written = path.stat().st_mtime_ns
            except OSError:
                self._started().log("warning", f"checkpoint {name} is not a local file: not uploaded")
                continue
            if written >= self._created_ns and (str(path), written) not in self._uploaded:
                self._uploaded.add((str(path), written))
                self._uploaded_steps.add(step)
                new.append(path)
        return new

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Lightning's end of a stage: "success" completes the run; any other status
        ("failed" on an exception, "finished" before a cluster requeues the job) fails it,
        with the exception being handled as its error when there is one."""
        run = self._started()
        trainer = self._trainer() if self._trainer is not None else None
        stage = _stage(trainer)
        error = sys.exception()  # Lightning finalizes "failed" inside its `except` block
        if status == SUCCESS:
            step = trainer.global_step if trainer is not None else self._step
            run.log("info", f"Lightning {stage} ended at step {step}")
        else:
            reason = f"{type(error).__name__}: {error}" if error is not None else f"status {status!r}"
            run.log("error", f"Lightning {stage} failed: {reason}")
        if run.finished:  # a later stage (a test after the fit) of a run that has ended
            return
        if status == SUCCESS:
            run.complete()
        else:
            run.fail(error if error is not None else f"Lightning ended the run with status {status!r}")

    def _started(self, total_steps: int | None = None) -> Run:
        if self._run is None:
            if self._client is None:
                self._client = Client()  # CRUCIBLE_URL and CRUCIBLE_API_KEY
            self._run = self._client.start_run(
                self.experiment_id, self._hyperparameters, total_steps=total_steps, run_id=self._run_id
            )
        return self._run


def _trainer_of(model: Module) -> Trainer | None:
    if not isinstance(model, LightningModule):
        return None
    try:
        trainer = model.trainer
    except RuntimeError:  # not attached to a Trainer
        return None
    return trainer if isinstance(trainer, Trainer) else None


def _stage(trainer: Trainer | None) -> str:
    """The stage: fit, validate, test or predict."""
    stage = trainer.state.fn if trainer is not None else None
    return stage.value if stage is not None else "training"


def _total_steps(trainer: Trainer) -> int | None:
    """The optimizer steps a fit will take, for the run's progress; None for other stages
    or when Lightning cannot tell (no end, an iterable dataset without max_steps)."""
    if trainer.state.fn != TrainerFn.FITTING:
        return None
    try:
        steps = trainer.estimated_stepping_batches
    except MisconfigurationException:  # accumulation that varies by epoch
        return None
    return int(steps) if math.isfinite(steps) and steps > 0 else None
