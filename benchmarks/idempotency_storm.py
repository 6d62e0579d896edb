"""Idempotency storm: many concurrent copies of one batch with one Idempotency-Key, stored once?

    python benchmarks/idempotency_storm.py [--rounds 20] [--copies 50] [--mode embedded|kafka|both]

Per mode, on a fresh temporary data dir:

- embedded: one `crucible serve` (embedded log, chDB, writer in the process);
- kafka: a tansu broker, two `crucible serve --no-writer` API processes and one
  `crucible writer` (with its own chDB), as tests/ingest/test_kafka_idempotency.py runs them.

Each round sends --copies copies of one batch with one Idempotency-Key at once, split
over the API processes; rounds alternate a small batch (3 experiments x 4 events,
decoded on the event loop) and a large one (2 experiments x 250 events, ~170 KB,
decoded by the ingest worker process). Meanwhile two other clients keep posting
batches of their own (half with a key). Once the writer has committed every record
appended (the group's offsets), it is stopped and its chDB read: for each round, how
many times its batch is stored (events stored / events in the batch; must be 1), and
whether any event id is stored twice. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from _support import ServerProcess, free_port, print_table, read_metrics, result_header, run_and_report

from service.log.interface import TELEMETRY_TOPIC, WAREHOUSE_GROUP
from tests.support import create_admin_key, inference_batch, log_positions, tansu_broker

EVENTS_URL = "/api/v1/telemetry/events"
PARTITIONS = 3
CATCH_UP_TIMEOUT = 180.0


def storm_batch(round_number: int) -> dict[str, Any]:
    """Even rounds small, odd rounds large (over the 64 KiB the event loop decodes itself)."""
    if round_number % 2 == 0:
        experiments, per_experiment, padding = 3, 4, 0
    else:
        experiments, per_experiment, padding = 2, 250, 300
    return inference_batch([f"exp_storm_{round_number}_{e}" for e in range(experiments)], per_experiment, padding)


class Client:
    """Posts batches; counts answers and the log records they appended."""

    def __init__(self, session: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        self.session = session
        self.headers = headers
        self.statuses: Counter[str] = Counter()
        self.records = 0
        self.server_errors = 0

    async def post(self, url: str, body: dict[str, Any], key: str | None) -> None:
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        try:
            async with self.session.post(url + EVENTS_URL, json=body, headers=headers) as answer:
                await answer.read()
                replayed = answer.headers.get("Idempotent-Replayed") == "true"
                self.statuses[f"{answer.status}{' replayed' if replayed else ''}"] += 1
                if answer.status >= 500:
                    self.server_errors += 1
                if answer.status == 202 and not replayed:
                    self.records += len({e["metadata"]["experiment_id"] for e in body["events"]})
        except aiohttp.ClientError as exc:
            self.statuses[f"no answer ({type(exc).__name__})"] += 1


async def drive(api_urls: list[str], headers: dict[str, str], rounds: int, copies: int) -> dict[str, Any]:
    """The rounds, with two other clients posting meanwhile; what was sent and answered."""
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=copies + 10)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = Client(session, headers)
        background = Client(session, headers)
        expected: Counter[str] = Counter()
        done = asyncio.Event()

        async def other_client(number: int) -> None:
            n = 0
            while not done.is_set():
                body = inference_batch([f"exp_other_{number}"], 100)
                key = f"other-{number}-{n}-{uuid.uuid4().hex}" if n % 2 else None
                await background.post(api_urls[n % len(api_urls)], body, key)
                n += 1

        others = [asyncio.create_task(other_client(number)) for number in range(2)]
        storm_seconds: list[float] = []
        try:
            for round_number in range(rounds):
                body = storm_batch(round_number)
                key = f"storm-{round_number}-{uuid.uuid4().hex}"
                started = time.perf_counter()
                await asyncio.gather(*(client.post(api_urls[i % len(api_urls)], body, key) for i in range(copies)))
                storm_seconds.append(time.perf_counter() - started)
                expected.update(e["metadata"]["experiment_id"] for e in body["events"])
        finally:
            done.set()
            await asyncio.gather(*others)
    return {
        "expected_storm_events": dict(expected),
        "storm_answers": dict(client.statuses),
        "other_answers": dict(background.statuses),
        "records_appended": client.records + background.records,
        "server_errors": client.server_errors + background.server_errors,
        "round_seconds_mean": sum(storm_seconds) / len(storm_seconds),
    }


async def kafka_committed(bootstrap: str) -> int:
    """The warehouse group's committed offsets added up (on a fresh broker: records committed)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=WAREHOUSE_GROUP, enable_auto_commit=False)
    await probe.start()
    try:
        offsets = [await probe.committed(TopicPartition(TELEMETRY_TOPIC, p)) for p in range(PARTITIONS)]
    finally:
        await probe.stop()
    return sum(o or 0 for o in offsets)


def wait_for(check: Any, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > CATCH_UP_TIMEOUT:
            raise TimeoutError(f"{what} not reached in {CATCH_UP_TIMEOUT:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def stored(data_dir: Path) -> tuple[Counter[str], int]:
    """Events per experiment in a chDB whose writer has exited, and ids stored more than once."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(interface="chdb", path=str(data_dir / "warehouse"))
    try:
        per_experiment = client.query("SELECT experiment_id, count() FROM telemetry_events GROUP BY experiment_id")
        repeated = client.command(
            "SELECT count() FROM (SELECT id FROM telemetry_events GROUP BY id HAVING count() > 1)"
        )
    finally:
        client.close()
    return Counter({e: int(n) for e, n in per_experiment.result_rows}), int(str(repeated))


def summarize(mode: str, sent: dict[str, Any], counts: Counter[str], repeated: int, rounds: int) -> dict[str, Any]:
    expected = sent.pop("expected_storm_events")
    per_round: list[float] = []
    for round_number in range(rounds):
        events = sum(n for e, n in expected.items() if e.startswith(f"exp_storm_{round_number}_"))
        got = sum(n for e, n in counts.items() if e.startswith(f"exp_storm_{round_number}_"))
        per_round.append(got / events)
    return {
        "mode": mode,
        "stored_per_key_min": min(per_round),
        "stored_per_key_max": max(per_round),
        "keys_stored_exactly_once": sum(1 for r in per_round if r == 1.0),
        "event_ids_stored_twice": repeated,
        **sent,
    }


def run_embedded(root: Path, rounds: int, copies: int) -> dict[str, Any]:
    data_dir = root / "embedded"
    secret = create_admin_key(["--data-dir", str(data_dir)])
    server = ServerProcess(["serve", "--data-dir", str(data_dir)], free_port(), log=root / "embedded.log")
    server.start(wait_ready=True, timeout=120)
    try:
        sent = asyncio.run(drive([server.url], {"Authorization": f"Bearer {secret}"}, rounds, copies))

        def caught_up() -> bool:
            end, committed = log_positions(data_dir)
            return committed == end

        sent["catch_up_seconds"] = wait_for(caught_up, "the writer's commit of every record")
        sent["retries_dropped_by_writer"] = read_metrics(server.url).get("crucible_writer_retries_dropped_total", 0)
    finally:
        server.stop()
    counts, repeated = stored(data_dir)
    return summarize("embedded", sent, counts, repeated, rounds)


def run_kafka(root: Path, rounds: int, copies: int) -> dict[str, Any]:
    with tansu_broker() as bootstrap:
        log_args = ["--kafka", bootstrap, "--kafka-partitions", str(PARTITIONS), "--no-kafka-idempotence"]
        secret = create_admin_key(log_args)

        def process(command: str, name: str, *extra: str) -> ServerProcess:
            args = [command, *log_args, "--data-dir", str(root / name), *extra]
            return ServerProcess(args, free_port(), log=root / f"{name}.log")

        apis = [process("serve", f"api-{n}", "--no-writer") for n in (1, 2)]
        writer = process("writer", "writer")
        started: list[ServerProcess] = []
        try:
            for server in [*apis, writer]:
                started.append(server.start(wait_ready=False))
            for server in started:
                server.wait_ready(timeout=120)
            sent = asyncio.run(drive([api.url for api in apis], {"Authorization": f"Bearer {secret}"}, rounds, copies))
            appended = sent["records_appended"]
            sent["catch_up_seconds"] = wait_for(
                lambda: asyncio.run(kafka_committed(bootstrap)) >= appended, "the writer's commit of every record"
            )
            metrics = read_metrics(writer.url)
            sent["retries_dropped_by_writer"] = metrics.get("crucible_writer_retries_dropped_total", 0)
            writer.stop()
        finally:
            for server in started:
                server.stop()
        counts, repeated = stored(root / "writer")
    return summarize("kafka, 2 API processes", sent, counts, repeated, rounds)


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="crucible-bench-storm-"))
    result = result_header("idempotency_storm", rounds=args.rounds, copies=args.copies)
    try:
        modes = {"embedded": [run_embedded], "kafka": [run_kafka], "both": [run_embedded, run_kafka]}[args.mode]
        result["modes"] = []
        for mode in modes:
            name = mode.__name__.removeprefix("run_")
            print(f"running {name}: {args.rounds} rounds x {args.copies} copies", flush=True)
            result["modes"].append(mode(root, args.rounds, args.copies))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return result


def report(result: dict[str, Any]) -> None:
    rows = [
        [
            m["mode"],
            result["rounds"],
            result["copies"],
            f"{m['stored_per_key_min']:g}..{m['stored_per_key_max']:g}",
            f"{m['keys_stored_exactly_once']}/{result['rounds']}",
            m["event_ids_stored_twice"],
            m["server_errors"],
            int(m["retries_dropped_by_writer"]),
            m["round_seconds_mean"],
            ", ".join(f"{k}: {v}" for k, v in sorted(m["storm_answers"].items())),
        ]
        for m in result["modes"]
    ]
    header = [
        "mode",
        "rounds",
        "copies",
        "stored per key",
        "keys once",
        "ids twice",
        "5xx",
        "retries dropped",
        "round s",
        "storm answers",
    ]
    print_table(header, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="batches, each sent --copies times at once")
    parser.add_argument("--copies", type=int, default=50, help="concurrent copies of each round's batch")
    parser.add_argument("--mode", choices=["embedded", "kafka", "both"], default="both")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return run_and_report(parser, run, report)


if __name__ == "__main__":
    sys.exit(main())
