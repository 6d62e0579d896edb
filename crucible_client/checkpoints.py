"""Checkpoint files uploaded on a thread of their own, then announced as telemetry.

The file is hashed and streamed from disk in the background, so `Run.checkpoint`
returns at once; the `crucible.run.checkpoint` event is logged only once the server
has the file. The file must stay as it is until the returned future is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from crucible_client.errors import CheckpointUploadError, ClientClosed
from crucible_client.stats import ClientStats
from crucible_client.transport import Transport, backoff_seconds
from crucible_client.wire import Queued

logger = logging.getLogger("crucible_client")

CHECKPOINT_EVENT = "crucible.run.checkpoint"
LOG_EVENT = "crucible.run.log"
BACKOFF_BASE_SECONDS = 0.5
# The run's start travels as telemetry and becomes a run once the server has folded it:
# the upload first waits for the events logged before it, then treats "run not found"
# as the fold (or another API replica) still catching up, for this many attempts.
SETTLE_STEP_SECONDS = 1.0
NOT_FOUND_ATTEMPTS = 8


def new_checkpoint_id() -> str:
    return "ckpt_" + uuid.uuid4().hex[:20]


def file_digest(path: Path) -> tuple[int, str]:
    """(size, hex SHA-256) of a file."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        return size, hashlib.file_digest(file, "sha256").hexdigest()


class Uploads:
    def __init__(
        self,
        transport: Transport,
        emit: Callable[[Queued], None],
        stats: ClientStats,
        max_backoff: float,
        settle: Callable[[float], bool],
    ) -> None:
        self._transport = transport
        self._emit = emit
        self._settle = settle  # flush(timeout): True once the events logged so far were answered
        self._stats = stats
        self._max_backoff = max_backoff
        self._halt = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._futures: set[Future[dict[str, Any]]] = set()

    def submit(self, metadata: dict[str, str], path: Path, measurements: dict[str, Any]) -> Future[dict[str, Any]]:
        """Upload `path` for the run of `metadata`; the future holds the server's `data`."""
        if self._executor is None:  # most clients never upload: no thread until one does
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crucible-upload")
        logged_at = time.time()  # the event says when the checkpoint was taken, not when it arrived
        future = self._executor.submit(self._upload, metadata, path, measurements, logged_at)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return future

    def _upload(
        self, metadata: dict[str, str], path: Path, measurements: dict[str, Any], logged_at: float
    ) -> dict[str, Any]:
        checkpoint_id = new_checkpoint_id()
        run_id = metadata["run_id"]
        try:
            size, sha256 = file_digest(path)
        except OSError as exc:
            self._failed(metadata, path, f"cannot read it: {exc}")
        while not self._halt.is_set() and not self._settle(SETTLE_STEP_SECONDS):
            pass  # the run's start is still on its way
        attempt = 0
        while True:
            outcome = self._transport.put_checkpoint(run_id, checkpoint_id, path, size, sha256)
            if outcome.kind == "accepted":
                break
            run_not_yet_known = outcome.status == 404 and attempt < NOT_FOUND_ATTEMPTS
            if (outcome.kind == "rejected" and not run_not_yet_known) or self._halt.is_set():
                self._failed(metadata, path, outcome.reason)
            attempt += 1
            delay = max(backoff_seconds(attempt, BACKOFF_BASE_SECONDS, self._max_backoff), outcome.retry_after or 0)
            logger.warning("checkpoint %s: upload failed (%s), retrying in %.1f s", path, outcome.reason, delay)
            self._halt.wait(delay)
        self._stats.count(checkpoints=1)
        event_metadata = {**metadata, "checkpoint_id": checkpoint_id, "path": path.name}
        self._emit((CHECKPOINT_EVENT, measurements, event_metadata, None, logged_at))
        try:
            data: dict[str, Any] = msgspec.json.decode(outcome.body)["data"]
        except (msgspec.DecodeError, KeyError, TypeError):
            data = {"id": checkpoint_id, "size": size, "sha256": sha256}
        return data

    def _failed(self, metadata: dict[str, str], path: Path, reason: str) -> NoReturn:
        self._stats.count(checkpoint_failures=1)
        message = f"checkpoint {path.name} was not uploaded: {reason}"
        logger.error(message)
        with contextlib.suppress(ClientClosed):  # closing gave up on the upload: the log says so
            self._emit((LOG_EVENT, {}, {**metadata, "level": "error", "message": message}, None, time.time()))
        raise CheckpointUploadError(message)

    def close(self, timeout: float | None) -> None:
        """Wait for the uploads under way (up to `timeout`), then give up on the rest."""
        if self._executor is None:
            return
        _, not_done = wait(set(self._futures), timeout)
        self._halt.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if not_done:
            logger.error("closing with %d checkpoint upload(s) unfinished", len(not_done))
