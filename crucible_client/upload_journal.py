"""Checkpoint uploads not yet announced, on disk, so that the next process finishes those of one that died.

With write-ahead, `Run.checkpoint` records the upload in the process's spool directory
before it starts: the run, the file's path, the checkpoint id, and its
`crucible.run.checkpoint` event, already encoded, with its id and Idempotency-Key. The
record goes once that event is in the spool (or the upload failed for good). A client
that adopts the directory of a process that died uploads the file again (the server
answers 200 to the same bytes under the same checkpoint id) and sends the same event
under the same key: stored once, whether or not the dead process had sent it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import msgspec

logger = logging.getLogger("crucible_client")

SUFFIX = ".upload"
PARTIAL_SUFFIX = ".partial"  # being written: a process killed then leaves it, never read


class PendingUpload(msgspec.Struct):
    checkpoint_id: str
    path: str  # absolute: the next process may run elsewhere
    metadata: dict[str, str]  # the run's
    event_key: str
    event_body: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(PendingUpload).decode


class UploadJournal:
    """One process's records, in its spool directory. `fsync` makes each one durable
    before the upload starts (a crash of the machine, not only of the process)."""

    def __init__(self, directory: Path, fsync: bool) -> None:
        self._directory = directory
        self._fsync = fsync

    def _path(self, checkpoint_id: str) -> Path:
        return self._directory / (checkpoint_id + SUFFIX)

    def record(self, upload: PendingUpload) -> None:
        """Write the record whole or not at all (a new file renamed into place)."""
        final = self._path(upload.checkpoint_id)
        partial = final.with_suffix(PARTIAL_SUFFIX)
        with open(partial, "wb") as file:
            file.write(_encode(upload))
            if self._fsync:
                file.flush()
                os.fsync(file.fileno())
        partial.rename(final)
        if self._fsync:
            fd = os.open(self._directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def forget(self, checkpoint_id: str) -> None:
        with contextlib.suppress(OSError):
            self._path(checkpoint_id).unlink(missing_ok=True)

    def pending(self) -> list[PendingUpload]:
        """The records in the directory (adopted from processes that ended), oldest first;
        unreadable ones and the leftovers of a write cut short are removed."""
        uploads = []
        paths = sorted(self._directory.glob("*" + SUFFIX), key=lambda p: p.stat().st_mtime_ns)
        for path in paths:
            try:
                uploads.append(_decode(path.read_bytes()))
            except (OSError, msgspec.DecodeError) as exc:
                logger.error("checkpoint upload record %s cannot be read, removed: %s", path, exc)
                path.unlink(missing_ok=True)
        for partial in self._directory.glob("*" + PARTIAL_SUFFIX):
            partial.unlink(missing_ok=True)
        return uploads
