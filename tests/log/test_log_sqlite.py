"""The embedded log: durable appends with group commit, offsets, consumer groups."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.log import sqlite as log_sqlite
from service.log.interface import LogUnavailable, PartitionPosition, Record, TopicPartition
from service.log.sqlite import SqliteLog

TOPIC = "crucible.telemetry"
TP = TopicPartition(TOPIC, 0)


async def test_appends_get_consecutive_offsets_and_survive_a_reopen(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.start()
    first = await log.append([Record(TOPIC, b"a", b"one"), Record(TOPIC, b"b", b"two")])
    second = await log.append([Record(TOPIC, b"a", b"three", (("h", b"v"),))])
    assert first == [(0, 0), (0, 1)] and second == [(0, 2)]
    await log.stop()

    reopened = SqliteLog(tmp_path)
    await reopened.start()
    assert await reopened.append([Record(TOPIC, b"c", b"four")]) == [(0, 3)]
    consumer = await reopened.consumer("g", [TOPIC])
    records = (await consumer.getmany(timeout=1, max_records=10))[TP]
    assert [(r.offset, r.key, r.value) for r in records] == [
        (0, b"a", b"one"),
        (1, b"b", b"two"),
        (2, b"a", b"three"),
        (3, b"c", b"four"),
    ]
    assert records[2].headers == (("h", b"v"),)
    await reopened.stop()


async def test_concurrent_appends_share_commits_and_keep_order(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.start()
    results = await asyncio.gather(*[log.append([Record(TOPIC, b"k", str(i).encode())]) for i in range(500)])
    offsets = sorted(r[0][1] for r in results)
    assert offsets == list(range(500))
    await log.stop()


async def test_consumer_group_resumes_from_its_commit(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.start()
    await log.append([Record(TOPIC, b"", str(i).encode()) for i in range(10)])
    consumer = await log.consumer("writers", [TOPIC])
    assert await consumer.committed(TP) is None
    got = (await consumer.getmany(timeout=1, max_records=4))[TP]
    assert [r.offset for r in got] == [0, 1, 2, 3]
    await consumer.commit({TP: 4})
    assert await consumer.lag() == 6
    again = await log.consumer("writers", [TOPIC])
    assert [r.offset for r in (await again.getmany(timeout=1, max_records=100))[TP]] == list(range(4, 10))
    other_group = await log.consumer("others", [TOPIC])
    assert (await other_group.getmany(timeout=1, max_records=1))[TP][0].offset == 0
    await log.stop()


async def test_positions_give_the_end_a_group_commit_and_the_start(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.start()
    assert await log.positions(TOPIC, "writers") == [PartitionPosition(0, 0, None, 0)]
    await log.append([Record(TOPIC, b"", str(i).encode()) for i in range(10)])
    consumer = await log.consumer("writers", [TOPIC])
    await consumer.commit({TP: 4})
    assert await log.positions(TOPIC, "writers") == [PartitionPosition(0, 10, 4, 0)]
    assert await log.positions(TOPIC, "others") == [PartitionPosition(0, 10, None, 0)]
    await log.stop()


async def test_a_fetch_stops_once_it_holds_fetch_max_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_sqlite, "FETCH_MAX_BYTES", 250)
    log = SqliteLog(tmp_path)
    await log.start()
    sizes = [100, 100, 100, 1000, 100]
    await log.append([Record(TOPIC, b"", bytes(size)) for size in sizes])
    consumer = await log.consumer("writers", [TOPIC])
    # The record that crosses the bound still comes, so one larger than the bound comes alone.
    fetches = [[r.offset for r in (await consumer.getmany(timeout=1, max_records=100))[TP]] for _ in range(3)]
    assert fetches == [[0, 1, 2], [3], [4]]
    await log.stop()


async def test_paused_partitions_are_not_fetched_and_getmany_wakes_on_append(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.start()
    consumer = await log.consumer("g", [TOPIC])
    consumer.pause([TP])
    await log.append([Record(TOPIC, b"", b"x")])
    assert await consumer.getmany(timeout=0.2, max_records=10) == {}
    consumer.resume([TP])
    assert len((await consumer.getmany(timeout=1, max_records=10))[TP]) == 1
    waiting = asyncio.create_task(consumer.getmany(timeout=10, max_records=10))
    await asyncio.sleep(0.1)
    await log.append([Record(TOPIC, b"", b"y")])
    assert (await asyncio.wait_for(waiting, 5))[TP][0].value == b"y"
    await log.stop()


async def test_full_log_refuses_the_whole_append(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, max_bytes=200 * 1024)
    await log.start()
    with pytest.raises(LogUnavailable):
        for _ in range(100):
            await log.append([Record(TOPIC, b"", b"x" * 10_000) for _ in range(3)], remember=("key", b"answer"))
    consumer = await log.consumer("g", [TOPIC])
    stored = 0
    while batch := await consumer.getmany(timeout=0.1, max_records=1000):
        stored += len(batch[TP])
    assert stored % 3 == 0  # whole appends only, never part of one
    await log.stop()


async def test_idempotency_answers_are_kept_with_the_append(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path)
    await log.start()
    await log.append([Record(TOPIC, b"", b"x")], remember=("key-1", b"the answer"))
    assert await log.recall("key-1") == b"the answer"
    assert await log.recall("key-2") is None
    await log.stop()
    expired = SqliteLog(tmp_path, idempotency_ttl_seconds=1)
    await expired.start()
    await asyncio.sleep(1.1)
    assert await expired.recall("key-1") is None
    await expired.stop()


async def test_retention_deletes_only_old_records_every_group_has_committed(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, retention_hours=1 / 3_600_000, retained_topics=(TOPIC,))  # one millisecond
    await log.start()
    await log.append([Record(TOPIC, b"", str(i).encode()) for i in range(10)])
    await log.append([Record("crucible.resources", b"", b"kept forever")])
    writers = await log.consumer("writers", [TOPIC])
    await writers.commit({TP: 6})
    await asyncio.sleep(0.01)
    log._prune(log._reader)  # type: ignore[arg-type]  # what the writer thread does every minute
    reader = await log.consumer("late-reader", [TOPIC, "crucible.resources"])
    fetched = await reader.getmany(timeout=1, max_records=100)
    assert [r.offset for r in fetched[TP]] == [6, 7, 8, 9]
    assert len(fetched[TopicPartition("crucible.resources", 0)]) == 1
    await log.stop()


async def test_retention_deletes_in_steps_and_stops_at_the_first_recent_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_sqlite, "PRUNE_CHUNK_RECORDS", 3)
    log = SqliteLog(tmp_path, retention_hours=0.2 / 3600, retained_topics=(TOPIC,))  # 200 ms
    await log.start()
    await log.append([Record(TOPIC, b"", b"old") for _ in range(5)])
    await asyncio.sleep(0.4)
    await log.append([Record(TOPIC, b"", b"recent") for _ in range(3)])
    await (await log.consumer("writers", [TOPIC])).commit({TP: 8})
    # A first step deletes a whole chunk and asks for another; the second stops at offset 5.
    assert [log._prune(log._reader) for _ in range(3)] == [True, False, False]  # type: ignore[arg-type]
    fetched = await (await log.consumer("late-reader", [TOPIC])).getmany(timeout=1, max_records=100)
    assert [(r.offset, r.value) for r in fetched[TP]] == [(5, b"recent"), (6, b"recent"), (7, b"recent")]
    await log.stop()


async def test_offsets_never_go_back_below_a_commit_after_retention_emptied_the_topic(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path, retention_hours=1 / 3_600_000, retained_topics=(TOPIC,))
    await log.start()
    await log.append([Record(TOPIC, b"", b"x") for _ in range(5)])
    await (await log.consumer("writers", [TOPIC])).commit({TP: 5})
    await asyncio.sleep(0.01)
    log._prune(log._reader)  # type: ignore[arg-type]
    await log.stop()
    reopened = SqliteLog(tmp_path)
    await reopened.start()
    assert await reopened.append([Record(TOPIC, b"", b"after")]) == [(0, 5)]
    got = await (await reopened.consumer("writers", [TOPIC])).getmany(timeout=1, max_records=10)
    assert [r.value for r in got[TP]] == [b"after"]
    await reopened.stop()


async def test_a_reader_at_the_end_reads_again_only_once_the_file_changed(tmp_path: Path) -> None:
    """A reader polls for appends by other processes; while nothing was committed to the file
    its polls ask SQLite's data version only, and an append by another process still arrives."""
    log = SqliteLog(tmp_path)
    await log.start()
    await log.append([Record(TOPIC, b"k", b"one")])
    reader = await log.reader(TOPIC)
    assert [r.value for r in await reader.read(timeout=0.1, max_records=10)] == [b"one"]
    statements: list[str] = []
    assert log._reader is not None
    log._reader.set_trace_callback(statements.append)
    assert await reader.read(timeout=0.3, max_records=10) == []  # one read finds the end
    assert await reader.read(timeout=0.5, max_records=10) == []  # then only the version, every poll
    reads = [s for s in statements if "FROM records" in s]
    polls = [s for s in statements if "data_version" in s]
    assert len(reads) == 1 and len(polls) >= 5, statements
    other = SqliteLog(tmp_path)  # another process's log on the same file (`crucible keys create`)
    await other.start()
    await other.append([Record(TOPIC, b"k", b"two")])
    assert [r.value for r in await reader.read(timeout=2, max_records=10)] == [b"two"]
    await other.stop()
    await log.stop()
