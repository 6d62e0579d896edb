"""The spool and the outbox without a server: batches written ahead, read back in order,
acknowledged out of order, adopted by the next process, removed once answered."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from crucible_client import segment as segment_module
from crucible_client.outbox import Outbox, Ticket
from crucible_client.segment import SEGMENT_SUFFIX, SENT_SUFFIX, Location
from crucible_client.spool import Spool
from crucible_client.stats import ClientStats
from crucible_client.upload_journal import PendingUpload, UploadJournal
from crucible_client.wire import Batch


def batches(first: int, count: int, origin: str = "") -> list[Batch]:
    return [Batch(key=f"k{n}", seq=n, events=10, body=b"{}", origin=origin) for n in range(first, first + count)]


def keys(spool: Spool, until: Location) -> list[str]:
    """What the spool sends, in order, if the server acknowledges each batch as it goes."""
    sent = []
    while (peeked := spool.peek(until)) is not None:
        batch, location = peeked
        sent.append(batch.key)
        spool.acknowledge(location)
    return sent


def files(root: Path, suffix: str) -> list[Path]:
    return sorted(root.rglob("*" + suffix))


@pytest.mark.parametrize("fsync", [False, True])
def test_batches_are_read_back_up_to_where_the_outbox_says_while_the_segment_is_written(
    tmp_path: Path, fsync: bool
) -> None:
    spool = Spool(tmp_path, fsync=fsync)
    locations = spool.append(batches(1, 3))
    assert locations == [Location(1, 0), Location(1, 1), Location(1, 2)]
    assert keys(spool, until=Location(1, 2)) == ["k1", "k2"]  # the third is still in memory
    spool.append(batches(4, 1))
    assert keys(spool, until=Location(1, 4)) == ["k3", "k4"]
    spool.close()
    assert list(tmp_path.iterdir()) == []  # all acknowledged: the directory and its lock go


def test_more_batches_at_once_than_one_system_call_takes_are_all_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(batches(1, 3000))  # a long outage of small batches, spilled at close without write-ahead
    spool.close()
    second = Spool(tmp_path)
    assert keys(second, until=second.adopted_until) == [f"k{n}" for n in range(1, 3001)]
    second.close()


def test_acknowledgements_out_of_order_leave_only_the_unanswered_to_the_next_process(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    locations = first.append(batches(1, 4))
    first.acknowledge(locations[2])  # two batches in flight: the later one answered first
    first.acknowledge(locations[0])
    first.close()  # as a process killed then: what the files say is all that is left
    [sent] = files(tmp_path, SENT_SUFFIX)
    assert sent.read_bytes() == b"."  # the acknowledged prefix; the third waits in memory for the second

    second = Spool(tmp_path)
    assert second.adopted == 1
    # The second batch, and the third: sent again under its key, the server answers without storing it twice.
    assert keys(second, until=second.adopted_until) == ["k2", "k3", "k4"]
    second.close()
    assert list(tmp_path.iterdir()) == []


def test_full_segments_are_sealed_and_removed_once_every_batch_is_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1)  # a segment per append
    locations = [spool.append(batches(n, 1))[0] for n in range(1, 5)]
    assert [location.segment for location in locations] == [1, 2, 3, 4]
    for location in locations[:3]:
        spool.acknowledge(location)
    assert [p.name for p in files(tmp_path, SEGMENT_SUFFIX)] == ["000000000004.batches"]  # the one being written
    spool.acknowledge(locations[3])
    spool.close()
    assert files(tmp_path, SEGMENT_SUFFIX) == []


def test_a_process_adopts_the_adopted_segments_of_one_that_died_before_sending_them(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    first.append(batches(1, 2))
    first.close()
    second = Spool(tmp_path)  # adopts, cannot send (the server is down), and dies
    second.append(batches(3, 1))
    second.close()
    third = Spool(tmp_path)
    assert third.adopted == 2
    assert keys(third, until=third.adopted_until) == ["k1", "k2", "k3"]  # oldest first
    third.close()


def test_a_write_cut_short_by_a_full_disk_ends_its_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    spool.append(batches(1, 1))

    def half_then_full(fd: int, buffers: list[memoryview]) -> int:
        os.write(fd, buffers[0][: len(buffers[0]) // 2])
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(segment_module.os, "writev", half_then_full)
    with pytest.raises(OSError):
        spool.append(batches(2, 1))  # the outbox keeps this one in memory
    monkeypatch.undo()
    assert spool.append(batches(3, 1)) == [Location(2, 0)]  # after the torn record: a new segment
    spool.close()
    second = Spool(tmp_path)
    assert keys(second, until=second.adopted_until) == ["k1", "k3"]
    second.close()


def test_a_torn_record_ends_an_adopted_segment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = Spool(tmp_path)
    first.append(batches(1, 2))
    first.close()
    [segment] = files(tmp_path, SEGMENT_SUFFIX)
    with segment.open("ab") as file:
        file.write(b"\x10\x00\x00\x00partial")  # killed in the middle of an append
    second = Spool(tmp_path)
    assert keys(second, until=second.adopted_until) == ["k1", "k2"]
    assert any("bytes after the last whole record ignored" in r.getMessage() for r in caplog.records)
    second.close()
    assert list(tmp_path.iterdir()) == []


def test_files_of_a_dead_process_other_than_segments_are_adopted_and_stray_acknowledgements_removed(
    tmp_path: Path,
) -> None:
    first = Spool(tmp_path)
    (first.directory / "ckpt_1.upload").write_bytes(b"a checkpoint upload's record")
    (first.directory / "000000000009.sent").write_bytes(b"...")  # its segment was removed: killed in between
    first.close()
    second = Spool(tmp_path)
    assert [p.name for p in second.directory.iterdir()] == ["ckpt_1.upload"]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [second.name]
    second.close()


# -- the outbox: memory before the spool ------------------------------------------------------


def outbox_of(tmp_path: Path, write_ahead: bool) -> Outbox:
    spool = Spool(tmp_path)
    return Outbox(spool, ClientStats(), write_ahead)


def claim(outbox: Outbox) -> Ticket:
    ticket = outbox.claim()
    assert ticket is not None
    return ticket


def test_with_write_ahead_every_batch_is_in_the_spool_before_a_sender_sees_it(tmp_path: Path) -> None:
    outbox = outbox_of(tmp_path, write_ahead=True)
    assert outbox.add(batches(1, 2, outbox.origin))
    [segment] = files(tmp_path, SEGMENT_SUFFIX)
    assert segment.stat().st_size > 0
    first, second = claim(outbox), claim(outbox)  # two in flight, from memory
    assert (first.spooled, second.spooled) == (False, False)
    outbox.done(second)
    outbox.done(first)
    assert outbox.wait_finished(2, timeout=0)
    outbox.close()
    assert list(tmp_path.iterdir()) == []  # acknowledged: nothing left for anyone


def test_without_write_ahead_batches_reach_the_spool_only_when_spilled(tmp_path: Path) -> None:
    outbox = outbox_of(tmp_path, write_ahead=False)
    assert not outbox.add(batches(1, 2, outbox.origin))
    assert files(tmp_path, SEGMENT_SUFFIX) == []
    outbox.spill(0, drop_on_failure=False)
    assert files(tmp_path, SEGMENT_SUFFIX) != []
    outbox.close()


@pytest.mark.parametrize("write_ahead", [True, False])
def test_batches_moved_out_of_memory_are_sent_from_the_spool_first_one_at_a_time(
    tmp_path: Path, write_ahead: bool
) -> None:
    outbox = outbox_of(tmp_path, write_ahead)
    outbox.add(batches(1, 3, outbox.origin))
    outbox.spill(10, drop_on_failure=True)  # over a cap of one batch: the two oldest leave memory
    assert outbox.memory_events == 10
    outbox.add(batches(4, 1, outbox.origin))
    first = claim(outbox)
    assert (first.batch.key, first.spooled) == ("k1", True)
    assert outbox.claim() is None  # the spool one at a time; memory waits for it
    outbox.done(first)
    second = claim(outbox)
    assert (second.batch.key, second.spooled) == ("k2", True)
    outbox.done(second)
    rest = [claim(outbox), claim(outbox)]
    assert [(t.batch.key, t.spooled) for t in rest] == [("k3", False), ("k4", False)]
    for ticket in rest:
        outbox.done(ticket)
    assert outbox.wait_finished(4, timeout=0)
    outbox.close()
    assert files(tmp_path, SEGMENT_SUFFIX) == []


def test_a_full_disk_keeps_batches_in_memory_and_write_ahead_resumes_after_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="crucible_client")
    outbox = outbox_of(tmp_path, write_ahead=True)
    spool_append = Spool.append

    def full(self: Spool, batches: list[Batch]) -> list[Location]:
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(Spool, "append", full)
    assert not outbox.add(batches(1, 1, outbox.origin))
    assert any("kept in memory only" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(Spool, "append", spool_append)
    # The disk has room again, but a batch in memory was not written: the next is not
    # either, so that the spool never holds a batch newer than one it lacks.
    assert not outbox.add(batches(2, 1, outbox.origin))
    for _ in range(2):
        outbox.done(claim(outbox))
    assert outbox.add(batches(3, 1, outbox.origin))  # memory holds no unwritten batch: written ahead again
    outbox.done(claim(outbox))
    assert outbox.wait_finished(3, timeout=0)
    outbox.close()
    assert files(tmp_path, SEGMENT_SUFFIX) == []


# -- checkpoint uploads not yet announced ---------------------------------------------------------


@pytest.mark.parametrize("fsync", [False, True])
def test_upload_records_are_adopted_whole_and_forgotten(tmp_path: Path, fsync: bool) -> None:
    first = Spool(tmp_path)
    journal = UploadJournal(first.directory, fsync)
    upload = PendingUpload("ckpt_1", "/checkpoints/1.pt", {"run_id": "run_1"}, "key-1", b'{"events":[]}')
    journal.record(upload)
    journal.record(PendingUpload("ckpt_2", "/checkpoints/2.pt", {"run_id": "run_1"}, "key-2", b"{}"))
    journal.forget("ckpt_2")
    (first.directory / "ckpt_3.partial").write_bytes(b"\x85")  # killed while writing a record
    first.close()

    second = Spool(tmp_path)
    assert UploadJournal(second.directory, fsync).pending() == [upload]
    assert [p.name for p in second.directory.iterdir()] == ["ckpt_1.upload"]  # the partial one is gone
    second.close()
