"""Batches on local disk while the server cannot take them, sent again later in order.

Each client process owns a directory under the spool root, held by an exclusive
`flock` on `<directory>.lock` beside it for the process's life (taken before the
directory exists, so nobody adopts a directory being created), so workers sharing a
machine and a root never write the same file. A directory whose lock nobody holds was left by a process that ended:
the next client to start adopts its segments, oldest process first, and sends them
before its own.

A segment is an append-only file of records (length, CRC-32, msgpack `Batch`), fsynced
after every append. Beside it, `<segment>.sent` grows by one byte per batch the server
acknowledged; it is not fsynced, since a batch sent twice after a crash carries the same
Idempotency-Key and the server answers the retry without storing it again. A segment
is only read once sealed (no more appends), and deleted when all its batches are sent.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import time
import uuid
import zlib
from collections import deque
from pathlib import Path
from typing import BinaryIO

import msgspec

from crucible_client.wire import Batch

logger = logging.getLogger("crucible_client")

SEGMENT_SUFFIX = ".batches"
SENT_SUFFIX = ".sent"
LOCK_SUFFIX = ".lock"
_HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload
_encode_batch = msgspec.msgpack.Encoder().encode
_decode_batch = msgspec.msgpack.Decoder(Batch).decode


def _segment_name(seq: int) -> str:
    return f"{seq:012d}{SEGMENT_SUFFIX}"


def _fsync_directory(path: Path) -> None:
    """Make a new or renamed entry of the directory durable, not only the file's bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_path(directory: Path) -> Path:
    return directory.with_name(directory.name + LOCK_SUFFIX)


def _try_lock(directory: Path) -> int | None:
    """An fd holding the directory's exclusive lock, or None when a live process holds it."""
    fd = os.open(_lock_path(directory), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def read_segment(path: Path) -> list[Batch]:
    """The batches of a segment, up to the first torn or damaged record (a crash mid-append)."""
    raw = path.read_bytes()
    batches: list[Batch] = []
    position = 0
    while position + _HEADER.size <= len(raw):
        length, crc = _HEADER.unpack_from(raw, position)
        payload = raw[position + _HEADER.size : position + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        batches.append(_decode_batch(payload))
        position += _HEADER.size + length
    if position != len(raw):
        logger.warning("spool segment %s: %d bytes after the last whole record ignored", path, len(raw) - position)
    return batches


class _Reading:
    """The sealed segment being sent: its batches and how many the server has acknowledged."""

    def __init__(self, seq: int, path: Path) -> None:
        self.seq = seq
        self.path = path
        self.sent_path = path.with_suffix(SENT_SUFFIX)
        self.batches = read_segment(path)
        self.sent = self.sent_path.stat().st_size if self.sent_path.exists() else 0
        self.sent_file: BinaryIO | None = None

    @property
    def done(self) -> bool:
        return self.sent >= len(self.batches)

    def mark_sent(self) -> None:
        if self.sent_file is None:
            self.sent_file = open(self.sent_path, "ab")  # noqa: SIM115 (open until the segment is done)
        self.sent_file.write(b".")
        self.sent_file.flush()
        self.sent += 1

    def remove(self) -> None:
        if self.sent_file is not None:
            self.sent_file.close()
        self.path.unlink(missing_ok=True)
        self.sent_path.unlink(missing_ok=True)


class Spool:
    """One process's spool directory under `root`. Not thread-safe: the outbox serialises calls."""

    def __init__(self, root: Path, segment_bytes: int = 8 << 20) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        # The name sorts by start time, so orphans are adopted oldest first.
        self.name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.directory = root / self.name
        lock = _try_lock(self.directory)
        if lock is None:  # a fresh, unique name: nobody else can hold it
            raise RuntimeError(f"cannot lock the spool directory {self.directory}")
        self._lock_fd: int | None = lock
        self.directory.mkdir()
        self._segments: deque[int] = deque()  # seq numbers, oldest first
        self._next_seq = 1
        self._writing: BinaryIO | None = None
        self._writing_seq = 0
        self._reading: _Reading | None = None
        self.adopted = self._adopt_orphans(root)

    def _adopt_orphans(self, root: Path) -> int:
        """Move the segments of directories no live process holds into ours; how many."""
        adopted = 0
        for orphan in sorted(p for p in root.iterdir() if p.is_dir() and p.name != self.name):
            lock = _try_lock(orphan)
            if lock is None:
                continue  # a live client's
            try:
                for segment in sorted(orphan.glob("*" + SEGMENT_SUFFIX)):
                    seq = self._new_seq()
                    target = self.directory / _segment_name(seq)
                    sent = segment.with_suffix(SENT_SUFFIX)
                    if sent.exists():
                        sent.rename(target.with_suffix(SENT_SUFFIX))
                    segment.rename(target)
                    self._segments.append(seq)
                    adopted += 1
                with contextlib.suppress(OSError):  # files of someone else's: leave them
                    orphan.rmdir()
                    _lock_path(orphan).unlink(missing_ok=True)
            finally:
                os.close(lock)
        if adopted:
            _fsync_directory(self.directory)
            logger.info("resending %d spool segment(s) a previous process left in %s", adopted, root)
        return adopted

    def _new_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    @property
    def empty(self) -> bool:
        return not self._segments

    def append(self, batches: list[Batch]) -> None:
        """Write batches at the end of the spool; durable (fsync) when this returns."""
        if self._writing is None or self._writing.tell() >= self.segment_bytes:
            self._seal()
            self._writing_seq = self._new_seq()
            self._writing = open(self.directory / _segment_name(self._writing_seq), "ab")  # noqa: SIM115
            _fsync_directory(self.directory)
            self._segments.append(self._writing_seq)
        records = []
        for batch in batches:
            payload = _encode_batch(batch)
            records.append(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        self._writing.write(b"".join(records))
        self._writing.flush()
        os.fsync(self._writing.fileno())

    def _seal(self) -> None:
        if self._writing is not None:
            self._writing.close()
            self._writing = None

    def peek(self) -> Batch | None:
        """The oldest batch not yet acknowledged, or None when the spool is empty."""
        while self._segments:
            if self._reading is None:
                seq = self._segments[0]
                if seq == self._writing_seq:
                    self._seal()  # read only what no longer changes
                self._reading = _Reading(seq, self.directory / _segment_name(seq))
            if not self._reading.done:
                return self._reading.batches[self._reading.sent]
            self._finish_segment()
        return None

    def mark_sent(self, batch: Batch) -> None:
        """The server acknowledged `batch`, the one `peek` returned."""
        reading = self._reading
        if reading is None or reading.done or reading.batches[reading.sent] is not batch:
            return
        reading.mark_sent()
        if reading.done:
            self._finish_segment()

    def _finish_segment(self) -> None:
        assert self._reading is not None
        self._reading.remove()
        self._segments.popleft()
        self._reading = None

    def close(self) -> None:
        """Release the directory; remove it when nothing is left to send."""
        self._seal()
        if self._reading is not None and self._reading.sent_file is not None:
            self._reading.sent_file.close()
            self._reading.sent_file = None
        if self._lock_fd is None:
            return
        if not self._segments:
            with contextlib.suppress(OSError):
                self.directory.rmdir()
                _lock_path(self.directory).unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None
