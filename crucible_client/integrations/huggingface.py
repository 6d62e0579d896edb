"""Hugging Face Transformers: a TrainerCallback that reports training to Crucible.

    from crucible_client import Client
    from crucible_client.integrations.huggingface import CrucibleCallback

    with Client(url, api_key) as client, CrucibleCallback("exp_abc123", client) as crucible:
        Trainer(model, args, train_dataset=data, callbacks=[crucible]).train()

Each `train()` is a run: started with the TrainingArguments as hyperparameters, given
every number the Trainer logs at its global step, the model's weights of each checkpoint,
and completed when training ends. Transformers tells callbacks nothing of an exception:
leaving the `with` block with one fails the run with it, and so does the process ending
with the run unfinished (with the uncaught exception, when that is what ended it).

Not available as `report_to="crucible"`: Transformers' list of reporters is a fixed dict
inside the library, which we would have to patch.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

from crucible_client.client import Client
from crucible_client.errors import ClientClosed
from crucible_client.integrations.staged_upload import upload_checkpoint
from crucible_client.integrations.values import json_safe, numbers_only
from crucible_client.run import Run

# A PEFT adapter's weights, as the peft library names them when the Trainer saves one.
ADAPTER_NAMES = ("adapter_model.safetensors", "adapter_model.bin")


def weights_files(checkpoint: Path) -> list[Path]:
    """The model's weights in a checkpoint directory the Trainer saved: its one file
    (`model.safetensors`, the `pytorch_model.bin` of save_safetensors=False, or a PEFT
    adapter's), or the shards and index of a model saved in several files. The rest of the
    directory (optimizer, scheduler and RNG states, configs) stays on the worker."""
    patterns: list[str] = [*ADAPTER_NAMES, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME]
    for single in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME):
        stem, suffix = single.split(".", 1)
        patterns += [single, f"{stem}-*-of-*.{suffix}"]  # model-00001-of-00003.safetensors
    return sorted({path for pattern in patterns for path in checkpoint.glob(pattern) if path.is_file()})


class CrucibleCallback(TrainerCallback):
    """`Trainer(..., callbacks=[CrucibleCallback(experiment_id, client)])`: each `train()`
    a run of `experiment_id`.

    Without a client, one is made from CRUCIBLE_URL and CRUCIBLE_API_KEY when training
    starts (only on the main process, the only one that reports). `hyperparameters` are
    added to the TrainingArguments' (the model's config, a dataset's name...). Checkpoint
    weights are uploaded in the background unless `upload_checkpoints` is False.
    """

    def __init__(
        self,
        experiment_id: str,
        client: Client | None = None,
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        upload_checkpoints: bool = True,
    ) -> None:
        self.experiment_id = experiment_id
        self.upload_checkpoints = upload_checkpoints
        self._client = client
        self._hyperparameters = json_safe(dict(hyperparameters or {}))
        self._run: Run | None = None
        # What was logged at the latest step, for the checkpoint saved at that step.
        self._step_logged = -1
        self._logged: dict[str, float] = {}

    @property
    def run(self) -> Run | None:
        """The run of the latest `train()` (None before the first)."""
        return self._run

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        self._fail("a new train() began before this run ended")
        if self._client is None:
            self._client = Client()  # CRUCIBLE_URL and CRUCIBLE_API_KEY
        hyperparameters = {**json_safe(args.to_dict()), **self._hyperparameters}  # to_dict hides tokens
        run = self._client.start_run(self.experiment_id, hyperparameters, total_steps=state.max_steps or None)
        self._run = run
        self._step_logged, self._logged = -1, {}
        atexit.register(self._at_exit)  # after the client's own: it runs first, while the client still sends
        run.log("info", f"training started: {state.max_steps} steps, {state.num_train_epochs} epochs")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Training logs (loss, learning rate, grad norm), evaluations (eval_*) and the
        final summary (train_runtime...): their numbers at the global step. Evaluations
        after train() go to the run it made."""
        if self._run is None or not state.is_world_process_zero or not logs:
            return
        values = numbers_only(logs)
        values.pop("step", None)  # the global step is the step; a logged "step" would collide with it
        if state.global_step != self._step_logged:
            self._step_logged, self._logged = state.global_step, {}
        self._logged.update(values)
        # The epoch is a fraction (0.25: a quarter through the first), kept as it is; Run
        # types it as an int.
        self._run.log_metrics(state.global_step, **values)  # type: ignore[arg-type]

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._run is None or not state.is_world_process_zero or not self.upload_checkpoints:
            return
        if args.output_dir is None:  # TrainingArguments sets a default: never None once training runs
            return
        # The Trainer has just written it; it deletes it later when save_total_limit says so.
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        files = weights_files(checkpoint)
        if not files:
            self._run.log("warning", f"{checkpoint.name}: no model weights found in {checkpoint} to upload")
            return
        epoch = state.epoch or 0.0
        metrics = {"step": float(state.global_step)}
        if self._step_logged == state.global_step:
            metrics.update((name, value) for name, value in self._logged.items() if name != "epoch")
        for path in files:
            upload_checkpoint(self._run, path, checkpoint.parent, epoch, metrics)
        names = ", ".join(path.name for path in files)
        self._run.log("info", f"{checkpoint.name} saved at epoch {epoch:g}: uploading {names}")

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        run = self._run
        if run is None or not state.is_world_process_zero or run.finished:
            return
        atexit.unregister(self._at_exit)
        run.log("info", f"training ended at step {state.global_step}, epoch {state.epoch or 0:g}")
        run.complete()

    def __enter__(self) -> CrucibleCallback:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if error is not None:
            self._fail(error)

    def _at_exit(self) -> None:
        # An uncaught exception ends the interpreter with it in sys.last_value.
        self._fail(getattr(sys, "last_value", None) or "the process ended before training did")

    def _fail(self, error: BaseException | str) -> None:
        """Fail the current run if it has not ended (nothing otherwise)."""
        run = self._run
        if run is None or run.finished:
            return
        atexit.unregister(self._at_exit)
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with contextlib.suppress(ClientClosed):  # the client was closed first: nothing can be sent
            run.log("error", f"training failed: {text}")
            run.fail(error)
