"""The worker client (crucible_client) against the real service: a training run, a server
that is down or restarts, the spool across processes, refused batches, the memory cap,
and checkpoint uploads (the PUT endpoint is a small handler of this file, added to the
real app; everything telemetry goes through the real ingest).

The client is synchronous and runs its own threads: calls that wait (flush, close) run
in a worker thread here, so the in-process service keeps answering.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from crucible_client import CheckpointUploadError, Client, ClientClosed
from crucible_client.outbox import Outbox
from crucible_client.segment import SEGMENT_SUFFIX, read_segment
from crucible_client.spool import Spool
from crucible_client.stats import ClientStats
from crucible_client.wire import Batch
from service.app import create_app
from tests.conftest import admin_secret, bearer, make_settings
from tests.ingest.test_durability import wait_caught_up
from tests.support import ServerProcess, eventually, free_port, serve_processes

EVENTS = "/api/v1/telemetry/events"
# An outage four times as long as the test's spill_after: within its first second the
# senders' backoff reaches its cap (FAST's max_backoff), the state the client keeps for any
# longer outage, each sender retrying dozens of times here. Nothing in the client counts an
# outage's length beyond spill_after: its request timeout is for requests left unanswered,
# and a server that is down refuses them at once. (It was 30 s: the same proof, 22 s longer.)
SPILL_AFTER = 2.0
DOWN_SECONDS = 4 * SPILL_AFTER
# Short waits so that the tests do not idle; the defaults are for real workers.
FAST = {"flush_interval": 0.05, "max_backoff": 0.5}


# -- helpers -------------------------------------------------------------------------------


async def stored_events(http: Any, run_id: str, expected: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every stored event of a run, once at least `expected` are visible, page by page."""

    async def total() -> int:
        async with http.get(EVENTS, params={"filter[run_id]": run_id, "per_page": "1"}) as answer:
            assert answer.status == 200, await answer.text()
            return int((await answer.json())["meta"]["total"])

    async def visible() -> bool:
        return await total() >= expected

    await eventually(visible, timeout=timeout)
    events: list[dict[str, Any]] = []
    params = {"filter[run_id]": run_id, "per_page": "100", "sort": "timestamp"}
    while True:
        async with http.get(EVENTS, params=params) as answer:
            assert answer.status == 200, await answer.text()
            page = await answer.json()
        events += page["data"]
        if not page["meta"]["has_more"]:
            return events
        params["cursor"] = page["meta"]["next_cursor"]


async def stored_once(http: Any, data_dir: Path, run_id: str, sent: int) -> list[dict[str, Any]]:
    """A run's events once the writer has inserted all the log holds: `sent` of them, each once."""
    await wait_caught_up(data_dir)
    events = await stored_events(http, run_id, sent)
    assert len(events) == sent
    assert_each_once(events)
    return events


def names(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(".".join(e["event_name"]) for e in events)


def assert_each_once(events: list[dict[str, Any]]) -> None:
    """Counted by event id: nothing stored twice, and every id a client-made UUID."""
    repeated = {i: n for i, n in Counter(e["id"] for e in events).items() if n > 1}
    assert not repeated, f"events stored more than once: {list(repeated.items())[:5]}"
    for event in events:
        uuid.UUID(event["id"])


def progress_steps(events: list[dict[str, Any]]) -> list[int]:
    return sorted(int(e["measurements"]["step"]) for e in events if e["event_name"][-1] == "progress")


def segments(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*" + SEGMENT_SUFFIX))


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.02)


def deliver_spool(url: str, secret: str, spool: Path) -> ClientStats:
    """A new client: it sends what earlier ones left in the spool; its counters once all is answered."""
    with Client(url, secret, spool_dir=spool, **FAST) as crucible:
        assert crucible.flush(timeout=60)
        return crucible.stats


def run_worker(script: str, url: str, secret: str, spool: Path) -> str:
    """A worker process running `script` with (url, key, spool directory); what it printed (a run id)."""
    done = subprocess.run(
        [sys.executable, "-c", script, url, secret, str(spool)], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@dataclass
class Offline:
    """`crucible serve` on the test's data dir and port, not started yet; an admin key of it."""

    server: ServerProcess
    secret: str
    session: aiohttp.ClientSession
    data_dir: Path
    make: Callable[[int], ServerProcess]  # another process on the same data dir

    async def stored_once(self, run_id: str, sent: int) -> list[dict[str, Any]]:
        return await stored_once(self.session, self.data_dir, run_id, sent)


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[Offline]:
    data_dir = tmp_path / "data"
    secret = await admin_secret(make_settings(data_dir))
    with serve_processes(tmp_path) as make:
        server = make(free_port())
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(server.url, headers=bearer(secret), timeout=timeout) as session:
            yield Offline(server, secret, session, data_dir, make)


# -- a training run, end to end ------------------------------------------------------------


def train(client: Client, epochs: int, steps_per_epoch: int) -> tuple[str, list[dict[str, float]]]:
    """A simulated training loop; returns the run id and the progress values it logged."""
    total = epochs * steps_per_epoch
    logged: list[dict[str, float]] = []
    with client.start_run("exp_train", {"lr": 0.001, "layers": [64, 32], "optimizer": "adam"}, total) as run:
        run.log("info", "training starts")
        for step in range(total):
            epoch = step // steps_per_epoch
            loss, accuracy = 2.0 / (step + 1), step / total
            run.log_metrics(step, epoch=epoch, loss=loss, accuracy=accuracy)
            logged.append({"step": step, "epoch": epoch, "loss": loss, "accuracy": accuracy, "progress": step / total})
            if step % 100 == 99:
                run.log("debug", f"step {step}")
        scores = {"f1": 0.875}
        client.log_event(
            "crucible.model.evaluation",
            measurements=scores,
            metadata={"run_id": run.id, "experiment_id": "exp_train", "split": "test"},
        )
        scores["f1"] = 0.0  # a caller reusing its dict does not change the event already logged
    return run.id, logged


async def test_a_training_run_arrives_as_the_worker_sent_it(client: TestClient, spool: Path) -> None:
    def worker() -> tuple[str, list[dict[str, float]], Any]:
        with Client(base_url(client), client.secret, spool_dir=spool, **FAST) as crucible:
            run_id, logged = train(crucible, epochs=3, steps_per_epoch=250)
            assert crucible.flush(timeout=60)
            return run_id, logged, crucible.stats

    run_id, logged, stats = await asyncio.to_thread(worker)
    sent = 1 + 1 + 750 + 7 + 1 + 1  # started, first log, progress, debug logs, evaluation, completed
    assert (stats.batched, stats.accepted, stats.rejected) == (sent, sent, 0)
    assert stats.spooled == sent  # each batch written ahead...
    assert segments(spool) == []  # ... and removed once acknowledged

    events = await stored_events(client, run_id, sent)
    assert len(events) == sent
    assert_each_once(events)
    assert names(events) == {
        "crucible.run.started": 1,
        "crucible.run.log": 8,
        "crucible.run.progress": 750,
        "crucible.model.evaluation": 1,
        "crucible.run.completed": 1,
    }
    by_name = {".".join(e["event_name"]): e for e in events}
    started = by_name["crucible.run.started"]
    assert started["metadata"] == {"run_id": run_id, "experiment_id": "exp_train"}
    assert started["data"] == {"hyperparameters": {"lr": 0.001, "layers": [64, 32], "optimizer": "adam"}}
    assert by_name["crucible.run.completed"]["metadata"] == {"run_id": run_id, "experiment_id": "exp_train"}
    assert by_name["crucible.model.evaluation"]["measurements"] == {"f1": 0.875}
    assert by_name["crucible.model.evaluation"]["metadata"]["split"] == "test"
    progress = sorted((e["measurements"] for e in events if e["event_name"][-1] == "progress"), key=lambda m: m["step"])
    assert progress == logged  # floats go through JSON and ClickHouse unchanged
    lines = [e["metadata"] for e in events if e["event_name"][-1] == "log"]
    assert {(m["level"], m["message"]) for m in lines} == {("info", "training starts")} | {
        ("debug", f"step {s}") for s in range(99, 750, 100)
    }
    assert all(e["metadata"]["run_id"] == run_id for e in events)
    assert run_id.startswith("run_") and len(run_id) == 24


async def test_a_failed_run_and_numbers_json_cannot_carry(client: TestClient, spool: Path) -> None:
    def worker() -> str:
        with Client(base_url(client), client.secret, spool_dir=spool, **FAST) as crucible:
            with pytest.raises(ZeroDivisionError), crucible.start_run("exp_fail") as run:
                run.log_metrics(0, loss=float("nan"), grad_norm=float("inf"), lr=0.1)
                raise ZeroDivisionError("division by zero")
            with pytest.raises(ValueError, match="level"):
                run.log("fatal", "no such level")  # type: ignore[arg-type]
            with pytest.raises(RuntimeError, match="already ended"):
                run.complete()
            assert crucible.flush(timeout=60)
        with pytest.raises(ClientClosed):
            run.log_metrics(1, loss=1.0)
        return run.id

    run_id = await asyncio.to_thread(worker)
    events = await stored_events(client, run_id, 3)
    assert names(events) == {"crucible.run.started": 1, "crucible.run.progress": 1, "crucible.run.failed": 1}
    failed = next(e for e in events if e["event_name"][-1] == "failed")
    assert failed["metadata"]["error"] == "ZeroDivisionError: division by zero"
    progress = next(e for e in events if e["event_name"][-1] == "progress")
    assert progress["measurements"] == {"lr": 0.1, "step": 0}  # NaN and inf left out, the rest kept


def test_the_client_is_made_from_the_environment(monkeypatch: pytest.MonkeyPatch, spool: Path) -> None:
    monkeypatch.delenv("CRUCIBLE_URL", raising=False)
    monkeypatch.setenv("CRUCIBLE_API_KEY", "secret")
    with pytest.raises(ValueError, match="CRUCIBLE_URL"):
        Client()
    monkeypatch.setenv("CRUCIBLE_URL", "ftp://example.org")
    with pytest.raises(ValueError, match="http"):
        Client(spool_dir=spool)
    monkeypatch.setenv("CRUCIBLE_URL", f"http://127.0.0.1:{free_port()}/")
    monkeypatch.setenv("CRUCIBLE_SPOOL_DIR", str(spool))
    with Client.from_env() as crucible:
        assert crucible.url == os.environ["CRUCIBLE_URL"].rstrip("/")
        assert crucible.spool_directory.parent.parent == spool
    assert segments(spool) == []  # nothing was logged: nothing spooled


EXITING_WORKER = """
import sys
from crucible_client import Client
client = Client(sys.argv[1], sys.argv[2], spool_dir=sys.argv[3], flush_interval=60)
run = client.start_run("exp_exit")
for step in range(300):
    run.log_metrics(step, loss=1.0)
print(run.id)
# no close(): the client flushes at exit
"""


async def test_a_worker_that_exits_without_closing_its_client_delivers_at_exit(
    client: TestClient, spool: Path, tmp_path: Path
) -> None:
    run_id = await asyncio.to_thread(run_worker, EXITING_WORKER, base_url(client), client.secret, spool)
    events = await stored_once(client, tmp_path / "data", run_id, 301)
    assert progress_steps(events) == list(range(300))
    assert segments(spool) == []


# -- refused batches -----------------------------------------------------------------------


async def test_refused_events_are_reported_and_counted_not_retried(
    client: TestClient, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="crucible_client")
    metadata = {"run_id": "run_refused", "experiment_id": "exp_refused"}

    def worker() -> Any:
        # No time-triggered batches: the two events logged together travel in one batch.
        with Client(base_url(client), client.secret, spool_dir=spool, flush_interval=3600, max_backoff=0.5) as crucible:
            crucible.log_event("crucible.bad", measurements={"": 1.0}, metadata=metadata)  # an empty key: invalid
            assert crucible.flush(timeout=60)  # answered for good: a 422, not retried
            after_422 = crucible.stats
            crucible.log_event(["crucible", "a.b"], metadata=metadata)  # a dot inside a segment: invalid
            crucible.log_event("crucible.good", measurements={"x": 1.0}, metadata=metadata)
            assert crucible.flush(timeout=60)
            return after_422, crucible.stats

    after_422, final = await asyncio.to_thread(worker)
    assert (after_422.rejected_batches, after_422.rejected, after_422.accepted, after_422.retries) == (1, 1, 0, 0)
    assert (final.rejected_batches, final.rejected, final.accepted, final.retries) == (1, 2, 1, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("refused a batch of 1 events (422" in m and "no event in the batch is valid" in m for m in messages)
    assert any("refused 1 of 2 events" in m and "crucible.a.b" in m for m in messages)
    events = await stored_events(client, "run_refused", 1)
    assert names(events) == {"crucible.good": 1}


async def test_a_batch_over_the_body_limit_is_refused_not_retried(
    app_client: Any, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = await app_client(max_body_bytes=2000)

    def worker() -> Any:
        with Client(base_url(service), service.secret, spool_dir=spool, **FAST) as crucible:
            crucible.log_event("crucible.big", metadata={"run_id": "run_big", "blob": "x" * 3000})
            assert crucible.flush(timeout=60)
            return crucible.stats

    stats = await asyncio.to_thread(worker)
    assert (stats.rejected_batches, stats.rejected, stats.retries) == (1, 1, 0)
    assert any("(413" in r.getMessage() for r in caplog.records)


async def test_a_refused_key_is_retried_and_its_events_are_kept(client: TestClient, spool: Path) -> None:
    def worker() -> Any:
        crucible = Client(base_url(client), "not-a-key", spool_dir=spool, **FAST)
        crucible.log_event("crucible.kept", metadata={"run_id": "run_kept"})
        assert not crucible.flush(timeout=2)  # 401 is retried: the key may be fixed
        assert not crucible.close(timeout=0)
        return crucible.stats

    stats = await asyncio.to_thread(worker)
    assert stats.retries >= 1 and stats.rejected == 0 and stats.accepted == 0
    assert len(segments(spool)) == 1  # kept for the next client

    # With the right key, the next client delivers them.
    assert (await asyncio.to_thread(deliver_spool, base_url(client), client.secret, spool)).accepted == 1
    assert segments(spool) == []
    assert names(await stored_events(client, "run_kept", 1)) == {"crucible.kept": 1}


# -- outages, restarts and the spool (server processes) -------------------------------------


@pytest.mark.slow
async def test_the_client_waits_out_a_server_that_is_down_for_longer_than_spill_after(
    offline: Offline, spool: Path
) -> None:
    server, secret = offline.server, offline.secret
    crucible = Client(server.url, secret, spool_dir=spool, spill_after=SPILL_AFTER, **FAST)  # before the server starts
    run = crucible.start_run("exp_outage", {"lr": 0.1})
    steps = 0
    started = asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - started < DOWN_SECONDS:
        run.log_metrics(steps, loss=1.0 / (steps + 1))
        steps += 1
        await asyncio.sleep(0.01)
    during = crucible.stats
    assert during.accepted == 0 and during.retries > 0
    assert during.spooled > 0  # down for longer than spill_after: on disk, safe from a crash

    await asyncio.to_thread(server.start)
    run.complete()
    assert await asyncio.to_thread(crucible.flush, 120)
    assert await asyncio.to_thread(crucible.close)
    assert crucible.stats.accepted == steps + 2

    events = await offline.stored_once(run.id, steps + 2)
    assert names(events) == {"crucible.run.started": 1, "crucible.run.progress": steps, "crucible.run.completed": 1}
    assert progress_steps(events) == list(range(steps))
    assert segments(spool) == []


@pytest.mark.slow
async def test_a_server_restart_mid_run_loses_nothing_the_client_was_told_was_sent(
    offline: Offline, spool: Path
) -> None:
    server, secret = await asyncio.to_thread(offline.server.start), offline.secret
    crucible = Client(server.url, secret, spool_dir=spool, **FAST)
    run = crucible.start_run("exp_restart")
    confirmed = 0  # progress events the client said the server has
    step = 0

    async def log_steps(count: int, flush_timeout: float) -> None:
        nonlocal step, confirmed
        for _ in range(count):
            run.log_metrics(step, loss=float(step))
            step += 1
            if step % 250 == 0:
                await asyncio.sleep(0.02)
            if step % 1000 == 0 and await asyncio.to_thread(crucible.flush, flush_timeout):
                confirmed = step

    await log_steps(4000, 60)
    assert confirmed == 4000
    await log_steps(500, 60)  # a batch or two in flight...
    server.kill()  # ... when the process dies (SIGKILL)
    await log_steps(3000, 0.5)  # the training goes on meanwhile
    server = await asyncio.to_thread(offline.make(server.port).start)  # the same data dir and port
    await log_steps(2000, 60)
    run.complete()
    assert await asyncio.to_thread(crucible.close, 120)
    assert crucible.stats.accepted == step + 2

    events = await offline.stored_once(run.id, step + 2)
    assert progress_steps(events) == list(range(step))  # the confirmed ones, and every other


@pytest.mark.slow
async def test_a_client_closed_while_the_server_is_down_leaves_a_spool_the_next_one_delivers(
    offline: Offline, spool: Path
) -> None:
    server, secret = offline.server, offline.secret

    def first_worker() -> str:
        crucible = Client(server.url, secret, spool_dir=spool, **FAST)
        run_id, _ = train(crucible, epochs=2, steps_per_epoch=600)
        assert not crucible.close(timeout=1)
        return run_id

    run_id = await asyncio.to_thread(first_worker)
    assert segments(spool)
    sent = 1 + 1 + 1200 + 12 + 1 + 1

    await asyncio.to_thread(server.start)

    stats = await asyncio.to_thread(deliver_spool, server.url, secret, spool)
    assert stats.accepted == sent and stats.batched == 0
    assert segments(spool) == []
    assert [p for p in spool.rglob("*") if p.is_dir() and p.parent != spool] == []  # directories removed too

    events = await offline.stored_once(run_id, sent)
    assert progress_steps(events) == list(range(1200))


CRASHING_WORKER = """
import os, sys, time
from crucible_client import Client
client = Client(sys.argv[1], sys.argv[2], spool_dir=sys.argv[3], spill_after=0.2, flush_interval=0.05)
run = client.start_run("exp_crash")
for step in range(500):
    run.log_metrics(step, loss=1.0)
while client.stats.spooled < 501:
    time.sleep(0.05)
print(run.id, flush=True)
os._exit(0)  # no close, no atexit: as if the process had been killed
"""


@pytest.mark.slow
async def test_a_crashed_process_leaves_a_spool_the_next_one_delivers(offline: Offline, spool: Path) -> None:
    server, secret = offline.server, offline.secret
    run_id = await asyncio.to_thread(run_worker, CRASHING_WORKER, server.url, secret, spool)
    assert segments(spool)

    await asyncio.to_thread(server.start)

    assert (await asyncio.to_thread(deliver_spool, server.url, secret, spool)).accepted == 501
    events = await offline.stored_once(run_id, 501)
    assert progress_steps(events) == list(range(500))
    assert segments(spool) == []


# -- the spool without a server ------------------------------------------------------------


@pytest.mark.parametrize("write_ahead", [True, False])
def test_with_the_server_down_and_a_small_memory_cap_events_go_to_the_spool(spool: Path, write_ahead: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    crucible = Client(
        url,
        "key",
        spool_dir=spool,
        max_memory_events=10,
        batch_events=5,
        spill_after=3600,
        write_ahead=write_ahead,
        **FAST,
    )
    for step in range(200):
        crucible.log_event("crucible.run.progress", {"step": step}, {"run_id": "run_cap"})
    wait_until(lambda: crucible.stats.batched == 200 and crucible._outbox.memory_events <= 10)  # all but the cap
    stats = crucible.stats
    assert stats.accepted == 0 and stats.dropped == 0
    assert stats.spooled == (200 if write_ahead else 190)  # written ahead, or when they left memory
    assert segments(crucible.spool_directory)
    assert not crucible.close(timeout=0)
    assert crucible.stats.spooled == 200


@pytest.mark.parametrize("write_ahead", [True, False])
def test_after_spill_after_the_batches_are_on_disk_either_way(spool: Path, write_ahead: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    crucible = Client(url, "key", spool_dir=spool, spill_after=0.2, write_ahead=write_ahead, **FAST)
    for step in range(100):
        crucible.log_event("crucible.run.progress", {"step": step}, {"run_id": "run_spill"})
    wait_until(lambda: crucible.stats.spooled == 100)
    time.sleep(0.5)  # past spill_after: without write-ahead, memory was emptied into the spool
    # With write-ahead, memory keeps its copies: they are on disk already, and sending them
    # from memory when the server is back is faster than reading them back one at a time.
    assert crucible._outbox.memory_events == (100 if write_ahead else 0)
    assert not crucible.close(timeout=0)


def test_a_live_client_s_spool_is_not_taken_by_another(spool: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    first = Client(url, "key", spool_dir=spool, spill_after=0, **FAST)
    first.log_event("crucible.mine", {"n": 1.0})
    wait_until(lambda: first.stats.spooled == 1)
    second = Client(url, "key", spool_dir=spool, **FAST)
    assert second._spool.adopted == 0  # the first one holds its directory's lock
    assert segments(first.spool_directory)
    first.close(timeout=0)
    second.close(timeout=0)
    third = Client(url, "key", spool_dir=spool, **FAST)
    assert third._spool.adopted == 1  # now nobody holds it
    third.close(timeout=0)


def test_a_torn_record_at_the_end_of_a_segment_is_ignored(spool: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    crucible = Client(url, "key", spool_dir=spool, batch_events=2, **FAST)
    for n in range(4):
        crucible.log_event("crucible.torn", {"n": float(n)})
    assert not crucible.close(timeout=0)
    [segment] = segments(spool)
    with segment.open("ab") as file:
        file.write(b"\x10\x00\x00\x00partial")  # a crash in the middle of an append
    batches = read_segment(segment)
    assert [b.events for b in batches] == [2, 2]


@pytest.mark.parametrize("write_ahead", [True, False])
def test_a_batch_acknowledged_while_it_was_being_spilled_is_not_sent_again(tmp_path: Path, write_ahead: bool) -> None:
    outbox = Outbox(Spool(tmp_path / "spool"), ClientStats(), write_ahead)
    batch = Batch(key="k1", seq=1, events=3, body=b"{}", origin=outbox.origin)
    outbox.add([batch])
    ticket = outbox.claim()
    assert ticket is not None and not ticket.spooled and outbox.claim() is None  # in flight: not claimed twice
    outbox.spill(0, drop_on_failure=True)  # the server is slow: the batch goes to disk meanwhile
    assert outbox.claim() is None  # its spooled copy waits for the attempt under way
    outbox.done(ticket)  # ... which succeeds
    assert outbox.claim() is None and outbox.wait_finished(1, timeout=0)
    outbox.close()
    assert segments(tmp_path / "spool") == []


# -- checkpoints ---------------------------------------------------------------------------


class CheckpointFaults:
    """Faults in front of the real checkpoint PUT: the first `fail_first` uploads answer 503,
    and with `refuse` every upload answers 422; the others reach the service."""

    def __init__(self, fail_first: int = 0, refuse: bool = False) -> None:
        self.fail_first = fail_first
        self.refuse = refuse
        self.attempts = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method != "PUT" or "/checkpoints/" not in request.path:
            return await handler(request)
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.json_response({"error": {"code": "unavailable", "message": "later", "details": {}}}, status=503)
        if self.refuse:
            error = {"code": "validation_error", "message": "checksum does not match", "details": {}}
            return web.json_response({"error": error}, status=422)
        assert request.content_type == "application/octet-stream"
        assert request.content_length is not None  # streamed with its length, not chunked
        return await handler(request)


@pytest.fixture
async def with_checkpoints(aiohttp_client: Any, tmp_path: Path) -> Any:
    """The whole service in-process with `faults` in front of its checkpoint uploads, and an
    experiment (`service.experiment_id`) for the runs to belong to."""

    async def start(faults: CheckpointFaults) -> TestClient:
        settings = make_settings(tmp_path / "data")
        secret = await admin_secret(settings)
        app = create_app(settings)
        app.middlewares.insert(0, faults.middleware)
        service = await aiohttp_client(app, headers=bearer(secret))
        service.secret = secret
        created = await service.post("/api/v1/experiments", json={"experiment": {"name": "checkpoints"}})
        service.experiment_id = (await created.json())["data"]["id"]
        return service

    return start


async def test_a_checkpoint_is_uploaded_then_announced(with_checkpoints: Any, spool: Path, tmp_path: Path) -> None:
    faults = CheckpointFaults(fail_first=1)  # one 503 first: retried
    service = await with_checkpoints(faults)
    path = tmp_path / "epoch-2.pt"
    content = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(content)

    def worker() -> tuple[str, dict[str, Any]]:
        with Client(base_url(service), service.secret, spool_dir=spool, **FAST) as crucible:
            run = crucible.start_run(service.experiment_id)
            future = run.checkpoint(path, epoch=2, val_loss=0.25)
            answer = future.result(timeout=60)
            run.complete()
            assert crucible.flush(timeout=60)
            assert crucible.stats.checkpoints == 1
            return run.id, answer

    run_id, answer = await asyncio.to_thread(worker)
    assert faults.attempts == 2
    download = await service.get(f"/api/v1/runs/{run_id}/checkpoints/{answer['id']}/download")
    assert download.status == 200 and await download.read() == content
    assert answer["sha256"] == hashlib.sha256(content).hexdigest() and answer["size"] == len(content)
    assert answer["id"].startswith("ckpt_")

    events = await stored_events(service, run_id, 3)
    assert names(events) == {"crucible.run.started": 1, "crucible.run.checkpoint": 1, "crucible.run.completed": 1}
    checkpoint = next(e for e in events if e["event_name"][-1] == "checkpoint")
    assert checkpoint["metadata"] == {
        "run_id": run_id,
        "experiment_id": service.experiment_id,
        "checkpoint_id": answer["id"],
        "path": "epoch-2.pt",
    }
    assert checkpoint["measurements"] == {"epoch": 2, "val_loss": 0.25}


async def test_a_refused_checkpoint_is_reported_and_not_announced(
    with_checkpoints: Any, spool: Path, tmp_path: Path
) -> None:
    faults = CheckpointFaults(refuse=True)
    service = await with_checkpoints(faults)
    path = tmp_path / "last.pt"
    path.write_bytes(b"weights")

    def worker() -> str:
        with Client(base_url(service), service.secret, spool_dir=spool, **FAST) as crucible:
            run = crucible.start_run(service.experiment_id)
            with pytest.raises(CheckpointUploadError, match="422"):
                run.checkpoint(path, epoch=1).result(timeout=60)
            with pytest.raises(CheckpointUploadError, match="cannot read"):
                run.checkpoint(tmp_path / "missing.pt", epoch=1).result(timeout=60)
            assert crucible.flush(timeout=60)
            assert crucible.stats.checkpoint_failures == 2
            return run.id

    run_id = await asyncio.to_thread(worker)
    assert faults.attempts == 1
    listed = await service.get(f"/api/v1/runs/{run_id}/checkpoints")
    assert (await listed.json())["data"] == []
    events = await stored_events(service, run_id, 3)
    assert names(events) == {"crucible.run.started": 1, "crucible.run.log": 2}
    levels = {e["metadata"]["level"] for e in events if e["event_name"][-1] == "log"}
    assert levels == {"error"}


async def test_a_checkpoint_unfinished_at_close_is_uploaded_and_announced_by_the_next_client(
    with_checkpoints: Any, spool: Path, tmp_path: Path
) -> None:
    faults = CheckpointFaults(fail_first=10**6)  # the service cannot take files for now
    service = await with_checkpoints(faults)
    path = tmp_path / "epoch-1.pt"
    path.write_bytes(os.urandom(100_000))

    def first_worker() -> str:
        crucible = Client(base_url(service), service.secret, spool_dir=spool, **FAST)
        run = crucible.start_run(service.experiment_id)
        upload = run.checkpoint(path, epoch=1, val_loss=0.5)
        run.complete()
        assert not crucible.close(timeout=1)
        with pytest.raises(CheckpointUploadError, match="the next client on this spool will upload it"):
            upload.result(timeout=30)  # once its thread sees the client closed
        assert crucible.stats.checkpoint_failures == 0
        return run.id

    run_id = await asyncio.to_thread(first_worker)
    faults.fail_first = 0  # the service takes files again
    await asyncio.to_thread(deliver_spool, base_url(service), service.secret, spool)  # its close waits for the upload

    events = await stored_events(service, run_id, 3)
    assert names(events) == {"crucible.run.started": 1, "crucible.run.checkpoint": 1, "crucible.run.completed": 1}
    [checkpoint] = (await (await service.get(f"/api/v1/runs/{run_id}/checkpoints")).json())["data"]
    assert checkpoint["size"] == 100_000 and checkpoint["reported_at"] is not None
    assert [p for p in spool.rglob("*") if p.is_file()] == []  # the record went with the announcement
