"""One spool segment: an append-only file of batch records, and which of them the server acknowledged.

A record is (payload length, CRC-32 of the payload, msgpack `Batch`), written whole by
one write() of the one process that owns the segment. Records are read back by byte
offset, so the segment being written can be read too, up to what was written.

Beside the segment, `<segment>.sent` grows by one byte each time the acknowledged
records form a longer prefix. Answers that arrive out of order (two batches are in
flight at a time) wait in memory until the prefix reaches them, so a process that
adopts the segment after a crash sends again at most those few: they carry their
Idempotency-Key, and the server answers them without storing them twice. For the same
reason the `.sent` file is never fsynced.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import msgspec

from crucible_client.wire import Batch

logger = logging.getLogger("crucible_client")

SEGMENT_SUFFIX = ".batches"
SENT_SUFFIX = ".sent"
_HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload
_IOV_MAX = 1024  # buffers per writev() (Linux's limit)
_encoder = msgspec.msgpack.Encoder()
_decode_batch = msgspec.msgpack.Decoder(Batch).decode


class Location(NamedTuple):
    """Where the spool holds a batch: its segment's number and its record's number there,
    from 0. Locations order as the batches were written."""

    segment: int
    record: int

    def next(self) -> Location:
        return Location(self.segment, self.record + 1)


def segment_name(seq: int) -> str:
    return f"{seq:012d}{SEGMENT_SUFFIX}"


def encode_records(batches: list[Batch]) -> list[bytearray]:
    """Each batch as a record: encoded once, straight after room for its header (a body is
    ~250 KB for 1,000 events: copies and concatenations would cost more than the write)."""
    records = []
    for batch in batches:
        record = bytearray(_HEADER.size)
        _encoder.encode_into(batch, record, _HEADER.size)
        payload = memoryview(record)[_HEADER.size :]
        _HEADER.pack_into(record, 0, len(payload), zlib.crc32(payload))
        payload.release()
        records.append(record)
    return records


def read_segment(path: Path) -> list[Batch]:
    """Every whole record of a segment file, up to the first torn or damaged one."""
    batches: list[Batch] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while (record := _read_record(fd, offset)) is not None:
            batch, offset = record
            batches.append(batch)
    finally:
        os.close(fd)
    return batches


def _read_record(fd: int, offset: int) -> tuple[Batch, int] | None:
    """The batch at `offset` and the offset after it; None at the end or at a torn or damaged record."""
    header = os.pread(fd, _HEADER.size, offset)
    if len(header) < _HEADER.size:
        return None
    length, crc = _HEADER.unpack(header)
    payload = os.pread(fd, length, offset + _HEADER.size)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return _decode_batch(payload), offset + _HEADER.size + length


def _write_all(fd: int, buffers: list[bytearray] | list[bytes]) -> None:
    """All of `buffers`, in order, in as few system calls as the kernel allows."""
    views = [memoryview(b) for b in buffers]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if views and written:
            views[0] = views[0][written:]


class Segment:
    """A segment's file and what is known of its records. Not thread-safe: the spool's lock
    covers the bookkeeping; only the writing thread appends."""

    def __init__(self, seq: int, path: Path, records: int | None, sealed: bool) -> None:
        self.seq = seq
        self.path = path
        self.sent_path = path.with_suffix(SENT_SUFFIX)
        # Known for the segments this process writes; for an adopted one, once read to its end.
        self.records = records
        self.sealed = sealed  # no more appends
        self.size = 0  # bytes appended by this process
        self._write_fd: int | None = None
        self._read_fd: int | None = None
        self._sent_fd: int | None = None
        self._acked_prefix = self.sent_path.stat().st_size if self.sent_path.exists() else 0
        self._acked_beyond: set[int] = set()  # acknowledged out of order, past the prefix

    @classmethod
    def create(cls, seq: int, path: Path) -> Segment:
        """A new, empty segment for this process to append to."""
        segment = cls(seq, path, records=0, sealed=False)
        segment._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return segment

    # -- the writing thread ------------------------------------------------------------------

    def write(self, records: list[bytearray], fsync: bool) -> None:
        """Append whole records (their count is added by the caller, under the spool's lock)."""
        assert self._write_fd is not None, "append to a sealed segment"
        _write_all(self._write_fd, records)
        self.size += sum(map(len, records))
        if fsync:
            os.fsync(self._write_fd)

    def seal(self) -> None:
        self.sealed = True
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None

    # -- reading back ------------------------------------------------------------------------

    def read_at(self, offset: int) -> tuple[Batch, int] | None:
        """The batch at byte `offset` and the offset of the next record; None past the last
        whole record, or when the file cannot be read."""
        try:
            if self._read_fd is None:
                self._read_fd = os.open(self.path, os.O_RDONLY)
            record = _read_record(self._read_fd, offset)
            left = 0 if record is not None else os.fstat(self._read_fd).st_size - offset
        except (OSError, msgspec.DecodeError) as exc:
            logger.error("spool segment %s cannot be read at %d: %s", self.path, offset, exc)
            return None
        if left > 0:
            logger.warning("spool segment %s: %d bytes after the last whole record ignored", self.path, left)
        return record

    # -- acknowledgements --------------------------------------------------------------------

    def is_acked(self, index: int) -> bool:
        return index < self._acked_prefix or index in self._acked_beyond

    def acknowledge(self, index: int) -> None:
        if self.is_acked(index):
            return
        self._acked_beyond.add(index)
        grown = 0
        while self._acked_prefix in self._acked_beyond:
            self._acked_beyond.discard(self._acked_prefix)
            self._acked_prefix += 1
            grown += 1
        if grown:
            try:
                if self._sent_fd is None:
                    self._sent_fd = os.open(self.sent_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                _write_all(self._sent_fd, [b"." * grown])
            except OSError as exc:  # known here; a process adopting the segment would send these again
                logger.warning("spool segment %s: cannot note %d acknowledged batches: %s", self.path, grown, exc)

    @property
    def complete(self) -> bool:
        """Sealed, and every record acknowledged: nothing left to send."""
        return self.sealed and self.records is not None and self._acked_prefix >= self.records

    def close(self) -> None:
        for name in ("_write_fd", "_read_fd", "_sent_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        self.sealed = True

    def remove(self) -> None:
        self.close()
        try:
            self.path.unlink(missing_ok=True)
            self.sent_path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("spool segment %s: cannot remove it, though all its batches were sent: %s", self.path, exc)
