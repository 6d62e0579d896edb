"""Checkpoint files uploaded on a thread of their own, then announced as telemetry.

The file is hashed and streamed from disk in the background, so `Run.checkpoint`
returns at once; the `crucible.run.checkpoint` event (encoded at the call, with its own
Idempotency-Key) is sent only once the server has the file. The file must stay as it is
until the returned future is done. With write-ahead, the upload is recorded first
(crucible_client/upload_journal.py): if the process dies, or closes, before the event is
in the spool, the next client on the spool uploads the file again and sends the event.
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

from crucible_client.batcher import Announcement
from crucible_client.errors import CheckpointUploadError, ClientClosed
from crucible_client.stats import ClientStats
from crucible_client.transport import Transport, backoff_seconds
from crucible_client.upload_journal import PendingUpload, UploadJournal
from crucible_client.wire import Queued, encode_event, event_ids, new_key

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
        announce: Callable[[Announcement], None],
        stats: ClientStats,
        max_backoff: float,
        settle: Callable[[float], bool],
        journal: UploadJournal,
        write_ahead: bool,
    ) -> None:
        self._transport = transport
        self._emit = emit
        self._announce = announce  # the event, once the server has the file
        self._settle = settle  # flush(timeout): True once the events logged so far were answered
        self._stats = stats
        self._max_backoff = max_backoff
        self._journal = journal
        self._write_ahead = write_ahead
        self._halt = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._futures: set[Future[dict[str, Any]]] = set()

    def submit(self, metadata: dict[str, str], path: Path, measurements: dict[str, Any]) -> Future[dict[str, Any]]:
        """Upload `path` for the run of `metadata`; the future holds the server's `data`."""
        checkpoint_id = new_checkpoint_id()
        # The event says when the checkpoint was taken, not when it arrived.
        event_metadata = {**metadata, "checkpoint_id": checkpoint_id, "path": path.name}
        try:
            body = encode_event(CHECKPOINT_EVENT, measurements, event_metadata, time.time(), event_ids(1)[0])
        except (TypeError, NotImplementedError, OverflowError) as exc:
            raise TypeError(f"checkpoint {path.name}: a metric cannot be encoded as JSON: {exc}") from None
        upload = PendingUpload(checkpoint_id, os.path.abspath(path), metadata, new_key(), body)
        if self._write_ahead:
            try:
                self._journal.record(upload)
            except OSError as exc:
                logger.warning("checkpoint %s: cannot record the upload in the spool (%s): a crash loses it", path, exc)
        return self._start(upload)

    def resume(self) -> int:
        """Start again the uploads that processes which ended left unannounced; how many."""
        pending = self._journal.pending()
        for upload in pending:
            logger.info("resuming checkpoint %s, left by a previous process: %s", upload.checkpoint_id, upload.path)
            self._start(upload)
        return len(pending)

    def _start(self, upload: PendingUpload) -> Future[dict[str, Any]]:
        if self._executor is None:  # most clients never upload: no thread until one does
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crucible-upload")
        future = self._executor.submit(self._upload, upload)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return future

    def _upload(self, upload: PendingUpload) -> dict[str, Any]:
        path, run_id = Path(upload.path), upload.metadata["run_id"]
        try:
            size, sha256 = file_digest(path)
        except OSError as exc:
            self._failed(upload, f"cannot read it: {exc}")
        while not self._halt.is_set() and not self._settle(SETTLE_STEP_SECONDS):
            pass  # the run's start is still on its way
        attempt = 0
        while True:
            outcome = self._transport.put_checkpoint(run_id, upload.checkpoint_id, path, size, sha256)
            if outcome.kind == "accepted":
                break
            run_not_yet_known = outcome.status == 404 and attempt < NOT_FOUND_ATTEMPTS
            if outcome.kind == "rejected" and not run_not_yet_known:
                self._failed(upload, outcome.reason)
            if self._halt.is_set():
                self._interrupted(upload, outcome.reason)
            attempt += 1
            delay = max(backoff_seconds(attempt, BACKOFF_BASE_SECONDS, self._max_backoff), outcome.retry_after or 0)
            logger.warning("checkpoint %s: upload failed (%s), retrying in %.1f s", path, outcome.reason, delay)
            self._halt.wait(delay)
        self._stats.count(checkpoints=1)
        try:
            self._announce(
                Announcement(upload.event_key, upload.event_body, lambda: self._journal.forget(upload.checkpoint_id))
            )
        except ClientClosed:
            self._interrupted(upload, "the client closed")
        try:
            data: dict[str, Any] = msgspec.json.decode(outcome.body)["data"]
        except (msgspec.DecodeError, KeyError, TypeError):
            data = {"id": upload.checkpoint_id, "size": size, "sha256": sha256}
        return data

    def _interrupted(self, upload: PendingUpload, reason: str) -> NoReturn:
        """Closing gave up on the upload; with write-ahead, its record stays for the next client."""
        if not self._write_ahead:
            self._failed(upload, reason)
        name = Path(upload.path).name
        message = f"checkpoint {name} is not uploaded yet ({reason}): the next client on this spool will upload it"
        logger.warning(message)
        raise CheckpointUploadError(message)

    def _failed(self, upload: PendingUpload, reason: str) -> NoReturn:
        self._stats.count(checkpoint_failures=1)
        self._journal.forget(upload.checkpoint_id)
        message = f"checkpoint {Path(upload.path).name} was not uploaded: {reason}"
        logger.error(message)
        with contextlib.suppress(ClientClosed):  # closing gave up on the upload: the log says so
            self._emit((LOG_EVENT, {}, {**upload.metadata, "level": "error", "message": message}, None, time.time()))
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
