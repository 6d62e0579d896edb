"""A training run as a worker reports it: the reserved `crucible.run.*` events."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from crucible_client.client import Client

logger = logging.getLogger("crucible_client")

STARTED = "crucible.run.started"
PROGRESS = "crucible.run.progress"
LOG = "crucible.run.log"
COMPLETED = "crucible.run.completed"
FAILED = "crucible.run.failed"
LEVELS = ("debug", "info", "warning", "error")
MAX_METADATA_CHARS = 4096  # the server refuses longer metadata values

Level = Literal["debug", "info", "warning", "error"]


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:20]


class Run:
    """Made by `Client.start_run`. As a context manager, it completes on a normal exit and
    fails (with the exception's text) on an exception."""

    def __init__(
        self, client: Client, experiment_id: str, total_steps: int | None = None, run_id: str | None = None
    ) -> None:
        self.id = run_id or new_run_id()
        self.experiment_id = experiment_id
        self.total_steps = total_steps
        self.finished = False
        self._client = client
        self._enqueue = client._enqueue
        # Shared by every event of the run: the server only reads it.
        self._metadata = {"run_id": self.id, "experiment_id": experiment_id}

    def log_metrics(self, step: int, epoch: int | None = None, **values: float) -> None:
        """`crucible.run.progress` with `step`, `epoch`, `progress` (with total_steps) and the
        values. Only queues the event: the hot path of a training loop."""
        values["step"] = step
        if epoch is not None:
            values["epoch"] = epoch
        if self.total_steps:
            values["progress"] = min(step / self.total_steps, 1.0)
        self._enqueue((PROGRESS, values, self._metadata, None, time.time()))

    def log(self, level: Level, message: str) -> None:
        """`crucible.run.log`: a line of the run's log at debug, info, warning or error."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
        metadata = {**self._metadata, "level": level, "message": str(message)[:MAX_METADATA_CHARS]}
        self._enqueue((LOG, {}, metadata, None, time.time()))

    def checkpoint(self, path: str | Path, epoch: int, **metrics: float) -> Future[dict[str, Any]]:
        """Upload a checkpoint file in the background, then log `crucible.run.checkpoint`.

        Returns at once. The future holds the server's answer (`id`, `size`, `sha256`...)
        or raises CheckpointUploadError; the file must not change until it is done (or, if
        this process dies or closes first, until the next client on the spool uploaded it).
        Raises TypeError at once when a metric cannot be encoded as JSON.
        """
        return self._client._uploads.submit(self._metadata, Path(path), {"epoch": epoch, **metrics})

    def complete(self) -> None:
        """`crucible.run.completed`."""
        self._finish(COMPLETED, {})

    def fail(self, error: str | BaseException) -> None:
        """`crucible.run.failed` with metadata `error`."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._finish(FAILED, {"error": text[:MAX_METADATA_CHARS]})

    def _finish(self, event_name: str, extra: dict[str, str]) -> None:
        if self.finished:
            raise RuntimeError(f"run {self.id} has already ended")
        self.finished = True
        self._enqueue((event_name, {}, {**self._metadata, **extra}, None, time.time()))

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.finished:
            return
        if error is None:
            self.complete()
        else:
            self.fail(error)
