"""Batches on local disk until the server has acknowledged them, sent again in order if need be.

Each client process owns a directory under the spool root, held by an exclusive
`flock` on `<directory>.lock` beside it for the process's life (taken before the
directory exists, so nobody adopts a directory being created), so workers sharing a
machine and a root never write the same file. A directory whose lock nobody holds was
left by a process that ended (closed, or killed): the next client to start adopts its
segments and any other files in it, oldest process first, and sends its batches before
its own.

The batches are written to segments (crucible_client/segment.py) of about
`segment_bytes`; a segment is deleted once it is sealed and every batch in it was
acknowledged. With the write-ahead mode, every batch is written here before it is sent,
so the spool holds what memory holds too; the outbox says up to where batches are to be
read back from disk (`peek(until)`): the adopted ones and those moved out of memory.

Writes are not fsynced unless `fsync`: what write() handed to the kernel survives the
process being killed, and only a crash of the machine loses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from pathlib import Path

from crucible_client.segment import SEGMENT_SUFFIX, SENT_SUFFIX, Location, Segment, encode_records, segment_name
from crucible_client.wire import Batch

logger = logging.getLogger("crucible_client")

LOCK_SUFFIX = ".lock"


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


class _Cursor:
    """The next record to read back from disk, and its batch once read."""

    def __init__(self, seq: int) -> None:
        self.move_to(seq)

    def move_to(self, seq: int) -> None:
        self.seq, self.index, self.offset = seq, 0, 0
        self.batch: Batch | None = None
        self.next_offset = 0

    def advance(self) -> None:
        self.index += 1
        self.offset = self.next_offset
        self.batch = None


class Spool:
    """One process's spool directory under `root`.

    Thread-safe: one thread appends (the batcher), senders read back and acknowledge.
    """

    def __init__(self, root: Path, segment_bytes: int = 8 << 20, fsync: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        # The name sorts by start time, so orphans are adopted oldest first.
        self.name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.directory = root / self.name
        lock = _try_lock(self.directory)
        if lock is None:  # a fresh, unique name: nobody else can hold it
            raise RuntimeError(f"cannot lock the spool directory {self.directory}")
        self._lock_fd: int | None = lock
        self.directory.mkdir()
        self._lock = threading.Lock()
        self._segments: dict[int, Segment] = {}  # by number, oldest first
        self._next_seq = 1
        self._writing: Segment | None = None
        self.adopted = self._adopt_orphans(root)
        # Everything adopted is read back from disk; what this process writes, as the outbox says.
        self.adopted_until = Location(self._next_seq, 0)
        self._cursor = _Cursor(1)

    def _adopt_orphans(self, root: Path) -> int:
        """Move the files of directories no live process holds into ours; how many segments."""
        adopted = 0
        for orphan in sorted(p for p in root.iterdir() if p.is_dir() and p.name != self.name):
            lock = _try_lock(orphan)
            if lock is None:
                continue  # a live client's
            try:
                for segment in sorted(orphan.glob("*" + SEGMENT_SUFFIX)):
                    seq = self._new_seq()
                    target = self.directory / segment_name(seq)
                    sent = segment.with_suffix(SENT_SUFFIX)
                    if sent.exists():
                        sent.rename(target.with_suffix(SENT_SUFFIX))
                    segment.rename(target)
                    self._segments[seq] = Segment(seq, target, records=None, sealed=True)
                    adopted += 1
                for other in orphan.iterdir():
                    if other.suffix == SENT_SUFFIX:  # its segment was removed, all sent: the process died in between
                        other.unlink()
                    elif not (self.directory / other.name).exists():  # a pending checkpoint upload's record, say
                        other.rename(self.directory / other.name)
                with contextlib.suppress(OSError):  # files of someone else's: leave them
                    orphan.rmdir()
                    _lock_path(orphan).unlink(missing_ok=True)
            finally:
                os.close(lock)
        if adopted and self.fsync:
            _fsync_directory(self.directory)
        if adopted:
            logger.info("resending %d spool segment(s) a previous process left in %s", adopted, root)
        return adopted

    def _new_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    # -- writing (one thread) ----------------------------------------------------------------

    def append(self, batches: list[Batch]) -> list[Location]:
        """Write batches at the end of the spool; where each one is. In the kernel's hands
        (and on disk, with `fsync`) when this returns."""
        records = encode_records(batches)
        segment = self._writing
        if segment is None or segment.size >= self.segment_bytes:
            segment = self._start_segment()
        try:
            segment.write(records, self.fsync)
        except OSError:
            with self._lock:  # a torn record may end the segment now: the next append starts another
                self._seal_writing()
            raise
        with self._lock:
            assert segment.records is not None
            first = segment.records
            segment.records += len(batches)
        return [Location(segment.seq, first + n) for n in range(len(batches))]

    def _start_segment(self) -> Segment:
        with self._lock:
            self._seal_writing()
            seq = self._new_seq()
        segment = Segment.create(seq, self.directory / segment_name(seq))
        if self.fsync:
            _fsync_directory(self.directory)
        with self._lock:
            self._segments[seq] = segment
            self._writing = segment
        return segment

    def _seal_writing(self) -> None:
        if self._writing is not None:
            self._writing.seal()
            self._remove_if_complete(self._writing)
            self._writing = None

    # -- reading back and acknowledging (senders) --------------------------------------------

    def peek(self, until: Location) -> tuple[Batch, Location] | None:
        """The oldest batch before `until` the server has not acknowledged, and where it is."""
        with self._lock:
            cursor = self._cursor
            while (segment := self._segment_from(cursor.seq)) is not None:
                if segment.seq != cursor.seq:
                    cursor.move_to(segment.seq)
                location = Location(segment.seq, cursor.index)
                if location >= until:
                    return None
                if segment.records is not None and cursor.index >= segment.records:
                    if not segment.sealed:
                        return None  # not written yet (until says otherwise: never, in practice)
                    cursor.move_to(segment.seq + 1)
                    continue
                if cursor.batch is None:
                    record = segment.read_at(cursor.offset)
                    if record is None:  # the end of an adopted segment, or one that cannot be read
                        if not segment.sealed:
                            return None  # being written: try again at the next claim
                        segment.records = cursor.index
                        self._remove_if_complete(segment)
                        cursor.move_to(segment.seq + 1)
                        continue
                    cursor.batch, cursor.next_offset = record
                if segment.is_acked(cursor.index):
                    cursor.advance()
                    continue
                return cursor.batch, location
            return None

    def _segment_from(self, seq: int) -> Segment | None:
        """The segment numbered `seq`, or the next one still there."""
        segment = self._segments.get(seq)
        if segment is not None:
            return segment
        return next((s for n, s in self._segments.items() if n > seq), None)

    def acknowledge(self, location: Location) -> None:
        """The server answered the batch at `location` for good: it is not to be sent again."""
        with self._lock:
            segment = self._segments.get(location.segment)
            if segment is not None:
                segment.acknowledge(location.record)
                self._remove_if_complete(segment)

    def _remove_if_complete(self, segment: Segment) -> None:
        if segment.complete:
            segment.remove()
            del self._segments[segment.seq]

    def close(self) -> None:
        """Release the directory; remove it when nothing is left in it."""
        with self._lock:
            self._seal_writing()
            for segment in self._segments.values():
                segment.close()
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):  # not empty: left for the next process
            self.directory.rmdir()
            _lock_path(self.directory).unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = None
