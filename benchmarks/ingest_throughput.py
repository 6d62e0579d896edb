"""Ingest throughput of `crucible serve`, end to end: HTTP batch -> log -> writer -> ClickHouse.

    python benchmarks/ingest_throughput.py [--seconds 60] [--kafka] [--paced-seconds 30]
        [--connections 8] [--dashboards 20] [--points-ab 3] [--py-spy PREFIX [--gil | --native]] [--keep]

Starts `crucible serve` on a fresh temporary data dir (with --kafka, also a tansu
broker, passing `--kafka HOST:PORT --no-kafka-idempotence`), then:

1. max load: a separate load-generator process posts pre-built 1,000-event batches
   (~300 B/event) over several concurrent connections for --seconds; then waits for
   the writer to insert everything acknowledged (and times that wait);
2. paced load at half the measured end-to-end rate for --paced-seconds: POST latency,
   and marker batches (each with a unique experiment_id) polled through
   /api/v1/telemetry/aggregate to time 202 -> visible, while --dashboards clients (20)
   each ask for p99 by 1 minute over the last hour of one experiment every
   --dashboard-interval seconds;
3. after the server stops, chDB's own insert rate of the same rows (read back from
   the embedded log's D/log.sqlite3, or copied from the broker with --kafka) into a
   fresh chDB, with the writer's batches, bodies and insert call (raw_insert JSONEachRow, best_effort
   times, a deduplication token) and the writer's mean batch size in phase 1; then the
   same inserts with and without the view that fills telemetry_points, alternated,
   --points-ab times each.

The server's RSS (children included) is sampled every 0.2 s throughout; CPU is
accounted per process (server, load generator, broker, everything else) and per
server thread during phase 1, since the machine is shared. --py-spy records the
server during phase 1 (--gil: only the GIL holder; --native: C frames, pauses the
server) and prints its top frames. Prints a table and a final JSON line; asserts
nothing. Loopback only; each phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from _support import (  # also puts the repository root on sys.path
    AUTH_HEADERS,
    CpuMeter,
    PySpy,
    RssSampler,
    add_server_arguments,
    get_json,
    metric_value,
    percentiles_ms,
    print_profile,
    print_table,
    read_metrics,
    source_revision,
    start_server,
)

from service.log.interface import StoredRecord

TELEMETRY_TOPIC = "crucible.telemetry"  # the high-volume topic (ARCHITECTURE.md)
INGEST_PATH = "/api/v1/telemetry/events"
AGGREGATE_PATH = "/api/v1/telemetry/aggregate"
EVENTS_PER_BATCH = 1000
DISTINCT_BODIES = 16
EXPERIMENTS = [f"exp_{i}" for i in range(10)]
MODELS = ["gpt-4o", "claude-3-5-sonnet", "llama-3-70b-instruct", "mistral-large-2407", "gemini-1.5-pro"]
MARKER_PLACEHOLDER = "exp_marker_placeholder_000000"
HEADERS = {"Content-Type": "application/json"}

TARGETS = {
    "end_to_end_events_per_s": (150_000, ">="),
    "ratio_end_to_end_to_chdb": (0.5, ">="),
    "post_p99_ms_at_half_load": (50.0, "<="),
    "visible_p99_s": (2.0, "<="),
    "peak_rss_mib": (1024.0, "<="),
}
AIM_EVENTS_PER_S = 250_000


# -- the load generator (runs in its own process) ------------------------------------------


def build_body(
    rng: random.Random,
    now: dt.datetime,
    experiment: str | None = None,
    events_per_batch: int = EVENTS_PER_BATCH,
    measurements: int = 0,
) -> bytes:
    """One realistic batch: inference events over the last hour, ~300 B each, with two or
    three measurements, or with exactly `measurements` of them (1 to 4) when given."""
    events = []
    for _ in range(events_per_batch):
        experiment_id = experiment or rng.choice(EXPERIMENTS)
        tokens = rng.randrange(16, 4096)
        values: dict[str, float] = {"duration_ms": round(rng.lognormvariate(5.3, 0.6), 3), "tokens": tokens}
        if measurements >= 3 or (not measurements and rng.random() < 0.5):
            values["cost_usd"] = round(tokens * 0.0000125, 7)
        if measurements >= 4:
            values["ttft_ms"] = round(rng.lognormvariate(4.0, 0.5), 3)
        if measurements:
            values = dict(list(values.items())[:measurements])
        timestamp = now - dt.timedelta(seconds=rng.uniform(0, 3600))
        events.append(
            {
                "event_name": ["crucible", "model", "inference"],
                "measurements": values,
                "metadata": {
                    "experiment_id": experiment_id,
                    "model": rng.choice(MODELS),
                    "request_id": f"req_{uuid.UUID(int=rng.getrandbits(128)).hex}",
                    "run_id": f"run_{experiment_id}_{rng.randrange(4)}",
                },
                "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
        )
    return json.dumps({"events": events}, separators=(",", ":")).encode()


def build_bodies(
    seed: int, events_per_batch: int = EVENTS_PER_BATCH, measurements: int = 0, one_experiment: bool = False
) -> tuple[list[bytes], bytes]:
    """DISTINCT_BODIES batches and a marker batch; with `one_experiment`, each batch's events
    are all of one experiment, as a training worker's are, rather than of all ten."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    bodies = [
        build_body(rng, now, rng.choice(EXPERIMENTS) if one_experiment else None, events_per_batch, measurements)
        for _ in range(DISTINCT_BODIES)
    ]
    return bodies, build_body(rng, now, MARKER_PLACEHOLDER, events_per_batch, measurements)


def generator_process(config: dict[str, Any], conn: Any) -> None:
    """Entry point of the load-generator process: build bodies, wait for go, run, report."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    events_per_batch = config.get("events_per_batch", EVENTS_PER_BATCH)
    bodies, marker_template = build_bodies(
        config["seed"], events_per_batch, config.get("measurements", 0), config.get("one_experiment", False)
    )
    conn.send({"ready": True, "bytes_per_event": sum(map(len, bodies)) / (len(bodies) * events_per_batch)})
    conn.recv()  # go
    if config["mode"] == "max":
        result = asyncio.run(max_load(config, bodies))
    else:
        result = asyncio.run(paced_load(config, bodies, marker_template))
    times = os.times()
    result["loadgen_cpu_s"] = times.user + times.system
    conn.send(result)
    conn.close()


async def _post(session: Any, url: str, body: bytes) -> tuple[int, int]:
    """(status, events accepted) of one batch; status 0 for a connection error."""
    import aiohttp

    try:
        async with session.post(url, data=body, headers=HEADERS) as answer:
            payload = await answer.read()
            if answer.status == 202:
                return 202, int(json.loads(payload)["data"]["accepted"])
            return answer.status, 0
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0, 0


async def max_load(config: dict[str, Any], bodies: list[bytes]) -> dict[str, Any]:
    """Closed loop: each connection posts its next batch as soon as the previous answers."""
    import aiohttp

    url = config["url"] + INGEST_PATH
    connections = config["connections"]
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    per_second: dict[int, int] = {}
    accepted = 0
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections), timeout=timeout, headers=config["headers"]
    ) as session:
        start = time.monotonic()
        deadline = start + config["seconds"]
        last_answer = start

        async def worker(index: int) -> None:
            nonlocal accepted, last_answer
            n = index
            while time.monotonic() < deadline:
                body = bodies[n % len(bodies)]
                n += connections
                sent = time.monotonic()
                status, count = await _post(session, url, body)
                done = time.monotonic()
                statuses[status] = statuses.get(status, 0) + 1
                if status == 202:
                    latencies.append(done - sent)
                    accepted += count
                    last_answer = done
                    second = int(done - start)
                    per_second[second] = per_second.get(second, 0) + count
                else:
                    await asyncio.sleep(0.05)  # 503/errors: do not spin

        await asyncio.gather(*(worker(i) for i in range(connections)))
    return {
        "start": start,
        "end": last_answer,
        "accepted": accepted,
        "statuses": statuses,
        "latencies": latencies,
        "per_second": [per_second.get(s, 0) for s in range(int(config["seconds"]) + 1)],
    }


async def paced_load(config: dict[str, Any], bodies: list[bytes], marker_template: bytes) -> dict[str, Any]:
    """Open loop at a fixed batch rate; latency counted from each batch's scheduled time.

    Every `marker_interval` seconds the batch is a marker: all its events carry an
    experiment_id of their own, polled through the aggregate endpoint until visible.
    """
    import aiohttp

    url = config["url"] + INGEST_PATH
    interval = EVENTS_PER_BATCH / config["rate"]
    marker_every = max(1, round(config["marker_interval"] / interval))
    poll_interval = config["poll_interval"]
    visible_timeout = config["visible_timeout"]
    statuses: dict[int, int] = {}
    latencies: list[float] = []  # from scheduled send time (no coordinated omission)
    service_latencies: list[float] = []  # from the actual send
    behind: list[float] = []
    visibility: list[float] = []
    invisible = 0
    accepted = 0
    pollers: list[asyncio.Task[None]] = []
    timeout = aiohttp.ClientTimeout(total=120)
    tag = uuid.uuid4().hex[:8]

    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config["max_in_flight"]), timeout=timeout, headers=config["headers"]
        ) as session,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16), timeout=timeout, headers=config["headers"]
        ) as poll_session,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(config["dashboards"], 1)),
            timeout=timeout,
            headers=config["headers"],
        ) as dashboard_session,
    ):

        async def count_of(experiment_id: str) -> int:
            query = urllib.parse.urlencode({"agg": "count", "filter[experiment_id]": experiment_id})
            async with poll_session.get(f"{config['url']}{AGGREGATE_PATH}?{query}") as answer:
                if answer.status != 200:
                    return -1
                payload = await answer.json()
            return int(sum(point["count"] for point in payload["data"]))

        async def poll(experiment_id: str, acked: float, expected: int) -> None:
            nonlocal invisible
            while time.monotonic() - acked < visible_timeout:
                asked = time.monotonic()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    if await count_of(experiment_id) >= expected:
                        # Visible no later than when this query started.
                        visibility.append(max(asked - acked, 0.0))
                        return
                await asyncio.sleep(max(poll_interval - (time.monotonic() - asked), 0.0))
            invisible += 1

        dashboard_latencies: list[float] = []
        dashboard_statuses: dict[int, int] = {}
        sending = True

        async def dashboard(index: int) -> None:
            """One dashboard: p99 by 1 minute over the last hour of one experiment, every
            `dashboard_interval` seconds (back to back when an answer takes longer)."""
            while sending:
                after = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
                query = urllib.parse.urlencode(
                    {
                        "metric": "duration_ms",
                        "agg": "p99",
                        "interval": "1m",
                        "filter[experiment_id]": EXPERIMENTS[index % len(EXPERIMENTS)],
                        "filter[after]": after,
                    }
                )
                asked = time.monotonic()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with dashboard_session.get(f"{config['url']}{AGGREGATE_PATH}?{query}") as answer:
                        await answer.read()
                        dashboard_statuses[answer.status] = dashboard_statuses.get(answer.status, 0) + 1
                        dashboard_latencies.append(time.monotonic() - asked)
                await asyncio.sleep(max(config["dashboard_interval"] - (time.monotonic() - asked), 0.0))

        dashboards = [asyncio.create_task(dashboard(i)) for i in range(config["dashboards"])]

        async def send(body: bytes, scheduled: float, marker: str | None) -> None:
            nonlocal accepted
            sent = time.monotonic()
            behind.append(sent - scheduled)
            status, count = await _post(session, url, body)
            done = time.monotonic()
            statuses[status] = statuses.get(status, 0) + 1
            if status != 202:
                return
            accepted += count
            latencies.append(done - scheduled)
            service_latencies.append(done - sent)
            if marker is not None:
                pollers.append(asyncio.create_task(poll(marker, done, count)))

        sends: list[asyncio.Task[None]] = []
        start = time.monotonic()
        n = 0
        markers = 0
        while True:
            scheduled = start + n * interval
            if scheduled >= start + config["seconds"]:
                break
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            marker = None
            if n % marker_every == marker_every // 2:
                marker = f"exp_mk_{tag}_{markers:05d}"
                markers += 1
                body = marker_template.replace(MARKER_PLACEHOLDER.encode(), marker.encode())
            else:
                body = bodies[n % len(bodies)]
            sends.append(asyncio.create_task(send(body, scheduled, marker)))
            n += 1
        await asyncio.gather(*sends)
        end = time.monotonic()
        sending = False
        await asyncio.gather(*pollers, *dashboards)
    return {
        "start": start,
        "end": end,
        "batches": n,
        "accepted": accepted,
        "statuses": statuses,
        "latencies": latencies,
        "service_latencies": service_latencies,
        "behind": behind,
        "markers": markers,
        "visibility": visibility,
        "invisible": invisible,
        "dashboard_latencies": dashboard_latencies,
        "dashboard_statuses": dashboard_statuses,
    }


def run_generator(config: dict[str, Any], on_start: Any = None) -> dict[str, Any]:
    """Run the load generator in a child process; `on_start()` is called as it starts."""
    config = {**config, "headers": dict(AUTH_HEADERS)}  # the generator is another process
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=generator_process, args=(config, child), name=f"loadgen-{config['mode']}")
    process.start()
    try:
        hello = parent.recv()
        if on_start is not None:
            on_start()
        parent.send("go")
        deadline = time.monotonic() + config["seconds"] + config.get("visible_timeout", 0) + 180
        while not parent.poll(0.5):
            if not process.is_alive():
                raise RuntimeError(f"the load generator exited with {process.exitcode} (see its traceback above)")
            if time.monotonic() > deadline:
                raise TimeoutError("the load generator did not report in time")
        result = parent.recv()
        result["bytes_per_event"] = hello["bytes_per_event"]
        return result
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


# -- the server side ---------------------------------------------------------------------


def warehouse_numbers(base_url: str) -> dict[str, float]:
    samples = read_metrics(base_url)
    return {
        "rows_inserted": metric_value(samples, "crucible_warehouse_rows_inserted_total"),
        "inserts": metric_value(samples, "crucible_warehouse_insert_seconds_count"),
        "insert_seconds": metric_value(samples, "crucible_warehouse_insert_seconds_sum"),
        "accepted": metric_value(samples, "crucible_events_accepted_total"),
        "append_seconds": metric_value(samples, "crucible_log_append_seconds_sum"),
        "appends": metric_value(samples, "crucible_log_append_seconds_count"),
    }


def aggregate_count(base_url: str) -> int:
    payload = get_json(f"{base_url}{AGGREGATE_PATH}?agg=count", timeout=60)
    return int(sum(point["count"] for point in payload["data"]))


def wait_for_writer(base_url: str, target: float, timeout: float) -> tuple[float, dict[str, float], bool]:
    """Wait until the warehouse holds `target` rows; (seconds waited, metrics, caught up)."""
    started = time.monotonic()
    while True:
        numbers = warehouse_numbers(base_url)
        if numbers["rows_inserted"] >= target:
            return time.monotonic() - started, numbers, True
        if time.monotonic() - started > timeout:
            return time.monotonic() - started, numbers, False
        time.sleep(0.1)


# -- chDB's own insert rate ------------------------------------------------------------------


def sqlite_records(path: Path) -> Iterator[StoredRecord]:
    """Every telemetry record in the embedded log, in offset order."""
    from service.log.sqlite import PARTITION, decode_headers

    conn = sqlite3.connect(path)
    try:
        cursor = conn.execute(
            "SELECT offset, key, value, headers FROM records WHERE topic = ? ORDER BY offset", (TELEMETRY_TOPIC,)
        )
        for offset, key, value, headers in cursor:
            yield StoredRecord(TELEMETRY_TOPIC, PARTITION, offset, key, value, decode_headers(headers), 0)
    finally:
        conn.close()


def dump_kafka_records(bootstrap: str, target: Path, expected_rows: int, timeout: float = 300.0) -> int:
    """Copy the telemetry topic from the broker into a SQLite file shaped like the embedded log."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from service.log.sqlite import encode_headers
    from service.warehouse.writer import record_shape

    def stored(partition: int, record: Any) -> StoredRecord:
        headers = tuple((k, bytes(v)) for k, v in record.headers)
        return StoredRecord(TELEMETRY_TOPIC, partition, record.offset, record.key or b"", record.value, headers, 0)

    async def run() -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=32 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        conn = sqlite3.connect(target)
        conn.execute("CREATE TABLE records (partition INTEGER, offset INTEGER, key BLOB, value BLOB, headers BLOB)")
        rows = 0
        try:
            await consumer.topics()
            partitions = sorted(consumer.partitions_for_topic(TELEMETRY_TOPIC) or ())
            consumer.assign([TopicPartition(TELEMETRY_TOPIC, p) for p in partitions])
            await consumer.seek_to_beginning()
            deadline = time.monotonic() + timeout
            empty = 0
            # Not end_offsets(): tansu's is wrong for multi-record batches (ARCHITECTURE.md).
            while rows < expected_rows and empty < 3 and time.monotonic() < deadline:
                fetched = await consumer.getmany(timeout_ms=2000, max_records=2000)
                if not fetched:
                    empty += 1
                    continue
                empty = 0
                for tp, records in fetched.items():
                    conn.executemany(
                        "INSERT INTO records VALUES (?,?,?,?,?)",
                        [(tp.partition, r.offset, r.key, r.value, encode_headers(r.headers)) for r in records],
                    )
                    rows += sum(record_shape(stored(tp.partition, r))[1] for r in records)
            conn.commit()
        finally:
            conn.close()
            await consumer.stop()
        return rows

    return asyncio.run(run())


def dumped_records(path: Path) -> Iterator[StoredRecord]:
    from service.log.sqlite import decode_headers

    conn = sqlite3.connect(path)
    try:
        for partition, offset, key, value, headers in conn.execute(
            "SELECT partition, offset, key, value, headers FROM records ORDER BY partition, offset"
        ):
            yield StoredRecord(TELEMETRY_TOPIC, partition, offset, key, value, decode_headers(headers), 0)
    finally:
        conn.close()


def chdb_insert_rate(
    records: Iterator[StoredRecord], batch_rows: int, max_rows: int, points_view: bool = True
) -> dict[str, Any]:
    """Insert the rows into a fresh chDB exactly as the writer does; time the insert calls.
    points_view=False drops the view that fills telemetry_points (migration 0015), to
    measure what the points table costs the inserts."""
    import clickhouse_connect

    import queries
    from service.log.interface import TopicPartition
    from service.warehouse.client import INSERT_SETTINGS
    from service.warehouse.writer import Batch, record_shape

    path = Path(tempfile.mkdtemp(prefix="crucible-bench-chdb-"))
    client = clickhouse_connect.get_client(interface="chdb", path=str(path / "warehouse"))
    try:
        for _, _, sql in queries.migrations():
            client.command(sql)
        if not points_view:
            client.command("DROP VIEW telemetry_events_to_points")
        insert_seconds = 0.0
        splice_seconds = 0.0
        # This process's CPU over the inserts: chDB's parsing, views and the merges they start.
        cpu_started = time.process_time()
        total_rows = 0
        inserts = 0
        pending: Batch | None = None

        def flush() -> None:
            nonlocal insert_seconds, splice_seconds, total_rows, inserts, pending
            if pending is None:
                return
            started = time.perf_counter()
            block = b"".join(pending.body())
            spliced = time.perf_counter()
            client.raw_insert(
                pending.table(),
                insert_block=block,
                fmt="JSONEachRow",
                settings={**INSERT_SETTINGS, "insert_deduplication_token": pending.token()},
            )
            insert_seconds += time.perf_counter() - spliced
            splice_seconds += spliced - started
            total_rows += pending.rows
            inserts += 1
            pending = None

        for record in records:
            legacy, rows = record_shape(record)
            # The writer's batches hold one partition and one record format each.
            if pending is not None and (pending.partition.partition, pending.legacy) != (record.partition, legacy):
                flush()
            if pending is None:
                pending = Batch(TopicPartition(TELEMETRY_TOPIC, record.partition), legacy=legacy)
            pending.add(record, rows)
            if pending.rows >= batch_rows:
                flush()
            if max_rows and total_rows + (pending.rows if pending else 0) >= max_rows:
                break
        flush()
        cpu_seconds = time.process_time() - cpu_started
        stored = int(str(client.command("SELECT count() FROM telemetry_events")))
    finally:
        with contextlib.suppress(Exception):
            client.close()
        shutil.rmtree(path, ignore_errors=True)
    return {
        "rows": total_rows,
        "stored": stored,
        "inserts": inserts,
        "batch_rows": batch_rows,
        "insert_seconds": insert_seconds,
        "splice_seconds": splice_seconds,
        "rows_per_s": total_rows / insert_seconds if insert_seconds else None,
        "rows_per_s_with_splice": total_rows / (insert_seconds + splice_seconds) if insert_seconds else None,
        "cpu_us_per_row": 1e6 * cpu_seconds / total_rows if total_rows else None,
    }


def points_view_ab(records: Any, batch_rows: int, args: argparse.Namespace) -> dict[str, Any]:
    """chDB's insert of the same rows with and without the view that fills telemetry_points,
    alternated, --points-ab runs each: what the points table costs the warehouse."""
    rates: dict[str, list[float]] = {"with": [], "without": []}
    for run_number in range(args.points_ab):
        for label in ("with", "without") if run_number % 2 == 0 else ("without", "with"):
            measured = chdb_insert_rate(records(), batch_rows, args.chdb_max_rows, points_view=label == "with")
            rates[label].append(measured["rows_per_s"])
            print(f"  chDB insert {label} the points view: {measured['rows_per_s']:,.0f} rows/s", flush=True)
    ratios = [w / wo for w, wo in zip(rates["with"], rates["without"], strict=True)]
    return {"rows_per_s": rates, "ratios": ratios, "median_ratio": statistics.median(ratios)}


# -- the run ---------------------------------------------------------------------------------


def broker_process() -> psutil.Process | None:
    """The tansu broker tests.support.tansu_broker started as our child."""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "tansu" in child.name():
                return child
    return None


def met(name: str, value: float | None) -> bool | None:
    if value is None:
        return None
    bound, op = TARGETS[name]
    return value >= bound if op == ">=" else value <= bound


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support import tansu_broker

    root = Path(tempfile.mkdtemp(prefix="crucible-bench-ingest-"))
    data_dir = root / "data"
    result: dict[str, Any] = {
        "benchmark": "ingest_throughput",
        "mode": "kafka" if args.kafka else "embedded",
        "commit": source_revision(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        with contextlib.ExitStack() as stack:
            extra: list[str] = []
            bootstrap = None
            if args.kafka:
                bootstrap = stack.enter_context(tansu_broker())
                extra = ["--kafka", bootstrap, "--no-kafka-idempotence"]
            print(f"starting crucible serve ({result['mode']}) on {data_dir}", flush=True)
            server = start_server(data_dir, root / "server.log", extra)
            stack.callback(server.stop)
            assert server.process is not None
            pid = server.process.pid
            rss = RssSampler(pid)
            rss.start()
            stack.callback(rss.stop)
            base = server.url
            broker = broker_process() if args.kafka else None
            broker_rss = RssSampler(broker.pid) if broker is not None else None
            if broker_rss is not None:
                broker_rss.start()
                stack.callback(broker_rss.stop)

            # 1. maximum load
            profiler: PySpy | None = None

            cpu = CpuMeter(pid)
            broker_cpu = CpuMeter(broker.pid) if broker is not None else None

            def on_max_start() -> None:
                nonlocal profiler
                rss.phase("max")
                cpu.start()
                if broker_cpu is not None:
                    broker_cpu.start()
                if args.py_spy:
                    output = Path(f"{args.py_spy}-{result['mode']}.txt")
                    profiler = PySpy(pid, output, args.seconds, native=args.native, gil=args.gil)
                    profiler.start()

            print(f"phase 1: max load, {args.connections} connections, {args.seconds:g}s", flush=True)
            before = warehouse_numbers(base)
            load = run_generator(
                {"mode": "max", "url": base, "seconds": args.seconds, "connections": args.connections, "seed": 1},
                on_start=on_max_start,
            )
            at_end = warehouse_numbers(base)
            cpu_used = cpu.stop()
            elapsed = load["end"] - load["start"]
            cpu_used["loadgen_cores"] = load["loadgen_cpu_s"] / cpu_used["wall_s"]
            cpu_used["broker_cores"] = broker_cpu.stop()["server_cores"] if broker_cpu is not None else 0.0
            cpu_used["other_cores"] = (
                cpu_used["machine_busy_cores"]
                - cpu_used["server_cores"]
                - cpu_used["loadgen_cores"]
                - cpu_used["broker_cores"]
            )
            cpu_used["server_cpu_us_per_event"] = 1e6 * cpu_used["server_cpu_s"] / max(load["accepted"], 1)
            rss.phase("catch-up")
            target_rows = at_end["accepted"]
            catch_up, caught, caught_up = wait_for_writer(base, target_rows, args.catchup_timeout)
            visible_count = aggregate_count(base)
            if profiler is not None:
                profiler.wait()
            max_phase = {
                "seconds": elapsed,
                "accepted": load["accepted"],
                "statuses": {str(k): v for k, v in sorted(load["statuses"].items())},
                "bytes_per_event": load["bytes_per_event"],
                "ack_events_per_s": load["accepted"] / elapsed,
                "visible_at_window_end": at_end["rows_inserted"] - before["rows_inserted"],
                "visible_rate_in_window": (at_end["rows_inserted"] - before["rows_inserted"]) / elapsed,
                "catch_up_seconds": catch_up,
                "caught_up": caught_up,
                "visible_after_catch_up": caught["rows_inserted"] - before["rows_inserted"],
                "aggregate_count_after_catch_up": visible_count,
                "end_to_end_events_per_s": (caught["rows_inserted"] - before["rows_inserted"]) / (elapsed + catch_up),
                "post_latency_ms": percentiles_ms(load["latencies"]),
                "acked_per_second": load["per_second"],
                "cpu": cpu_used,
                "writer_inserts": caught["inserts"] - before["inserts"],
                "writer_rows_per_insert": (caught["rows_inserted"] - before["rows_inserted"])
                / max(caught["inserts"] - before["inserts"], 1),
                "writer_insert_seconds": caught["insert_seconds"] - before["insert_seconds"],
                "writer_in_process_rows_per_s": (caught["rows_inserted"] - before["rows_inserted"])
                / max(caught["insert_seconds"] - before["insert_seconds"], 1e-9),
                "log_append_mean_ms": 1000
                * (at_end["append_seconds"] - before["append_seconds"])
                / max(at_end["appends"] - before["appends"], 1),
            }
            result["max"] = max_phase
            if profiler is not None:
                result["profile"] = profiler.summary()
                result["profile_file"] = str(profiler.output)

            # 2. paced load at half the sustained rate
            sustained = min(max_phase["end_to_end_events_per_s"], max_phase["ack_events_per_s"])
            rate = args.paced_rate or max(sustained / 2, 1000.0)
            print(f"phase 2: paced load at {rate:,.0f} events/s for {args.paced_seconds:g}s", flush=True)
            before = warehouse_numbers(base)
            paced = run_generator(
                {
                    "mode": "paced",
                    "url": base,
                    "seconds": args.paced_seconds,
                    "rate": rate,
                    "max_in_flight": 256,
                    "marker_interval": args.marker_interval,
                    "poll_interval": args.poll_interval,
                    "visible_timeout": args.visible_timeout,
                    "dashboards": args.dashboards,
                    "dashboard_interval": args.dashboard_interval,
                    "seed": 2,
                },
                on_start=lambda: rss.phase("paced"),
            )
            after = warehouse_numbers(base)
            visibility = percentiles_ms(paced["visibility"])
            result["paced"] = {
                "log_append_mean_ms": 1000
                * (after["append_seconds"] - before["append_seconds"])
                / max(after["appends"] - before["appends"], 1),
                "writer_rows_per_insert": (after["rows_inserted"] - before["rows_inserted"])
                / max(after["inserts"] - before["inserts"], 1),
                "writer_insert_mean_ms": 1000
                * (after["insert_seconds"] - before["insert_seconds"])
                / max(after["inserts"] - before["inserts"], 1),
                "target_events_per_s": rate,
                "seconds": paced["end"] - paced["start"],
                "batches": paced["batches"],
                "accepted": paced["accepted"],
                "achieved_events_per_s": paced["accepted"] / (paced["end"] - paced["start"]),
                "statuses": {str(k): v for k, v in sorted(paced["statuses"].items())},
                "post_latency_ms": percentiles_ms(paced["latencies"]),
                "post_service_latency_ms": percentiles_ms(paced["service_latencies"]),
                "send_behind_schedule_ms": percentiles_ms(paced["behind"]),
                "markers": paced["markers"],
                "markers_never_visible": paced["invisible"],
                "visible_s": {k: (v / 1000 if isinstance(v, float) else v) for k, v in visibility.items()},
                "poll_interval_s": args.poll_interval,
                "dashboards": args.dashboards,
                "dashboard_statuses": {str(k): v for k, v in sorted(paced["dashboard_statuses"].items())},
                "dashboard_latency_ms": percentiles_ms(paced["dashboard_latencies"]),
            }
            rss.phase("stop")
            server.stop()
            rss.stop()
            result["peak_rss_mib"] = rss.peak / 2**20
            result["peak_rss_mib_by_phase"] = {k: v / 2**20 for k, v in rss.peaks_by_phase.items()}
            result["rss_samples"] = rss.samples
            if broker_rss is not None:
                broker_rss.stop()
                result["broker_peak_rss_mib"] = broker_rss.peak / 2**20

            # 3. chDB's own insert rate of the same rows
            batch_rows = args.chdb_batch_rows or max(int(max_phase["writer_rows_per_insert"]), 1)
            print(f"phase 3: chDB insert of the same rows, {batch_rows:,} rows per insert", flush=True)
            if args.kafka:
                assert bootstrap is not None
                dump = root / "kafka-records.sqlite3"
                expected = caught["rows_inserted"] + (paced["accepted"] if not args.chdb_max_rows else 0)
                dump_kafka_records(bootstrap, dump, int(min(expected, args.chdb_max_rows or expected)))
            else:
                dump = data_dir / "log.sqlite3"
            read = dumped_records if args.kafka else sqlite_records
            chdb = chdb_insert_rate(read(dump), batch_rows, args.chdb_max_rows)
            result["chdb"] = chdb
            e2e = max_phase["end_to_end_events_per_s"]
            result["ratio_end_to_end_to_chdb"] = e2e / chdb["rows_per_s"] if chdb["rows_per_s"] else None
            if args.points_ab:
                result["points_view_ab"] = points_view_ab(lambda: read(dump), batch_rows, args)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    result["targets"] = {
        name: {"target": bound, "op": op, "measured": value, "met": met(name, value)}
        for (name, (bound, op)), value in zip(
            TARGETS.items(),
            [
                result["max"]["end_to_end_events_per_s"],
                result.get("ratio_end_to_end_to_chdb"),
                result["paced"]["post_latency_ms"]["p99"],
                result["paced"]["visible_s"]["p99"],
                result["peak_rss_mib"],
            ],
            strict=True,
        )
    }
    return result


def report(result: dict[str, Any]) -> None:
    m, p, c = result["max"], result["paced"], result["chdb"]
    print(f"\ningest_throughput ({result['mode']}), {m['bytes_per_event']:.0f} B/event, 1,000 events per POST")
    print_table(
        ["measure", "value"],
        [
            ["max phase: seconds of load", m["seconds"]],
            ["max phase: answers by status", json.dumps(m["statuses"])],
            ["max phase: 202-acknowledged events/s", m["ack_events_per_s"]],
            ["max phase: visible in ClickHouse at window end, events/s", m["visible_rate_in_window"]],
            ["max phase: writer catch-up after window, s", m["catch_up_seconds"]],
            ["max phase: caught up", m["caught_up"]],
            ["max phase: aggregate count after catch-up", m["aggregate_count_after_catch_up"]],
            ["max phase: POST p50 / p99 ms", f"{m['post_latency_ms']['p50']:.1f} / {m['post_latency_ms']['p99']:.1f}"],
            ["max phase: log append mean ms", m["log_append_mean_ms"]],
            [
                f"max phase: CPU cores used of {os.cpu_count()}: server / loadgen / broker / other / idle",
                " / ".join(
                    f"{m['cpu'][k]:.2f}"
                    for k in ("server_cores", "loadgen_cores", "broker_cores", "other_cores", "machine_idle_cores")
                ),
            ],
            [
                "max phase: server CPU us per event (kernel share)",
                f"{m['cpu']['server_cpu_us_per_event']:.1f} ({100 * m['cpu']['server_system_share']:.0f} % in kernel)",
            ],
            [
                "max phase: server cores by thread (main = event loop)",
                ", ".join(f"{k} {v:.2f}" for k, v in m["cpu"]["server_cores_by_thread"].items()),
            ],
            [
                "writer: inserts / mean rows per insert",
                f"{m['writer_inserts']:.0f} / {m['writer_rows_per_insert']:,.0f}",
            ],
            ["writer: in-process insert rate, rows/s (insert time only)", m["writer_in_process_rows_per_s"]],
            ["chDB alone: rows / inserts / rows per insert", f"{c['rows']:,} / {c['inserts']} / {c['batch_rows']:,}"],
            ["chDB alone: insert rate, rows/s", c["rows_per_s"]],
            ["chDB alone: incl. writer's body building, rows/s", c["rows_per_s_with_splice"]],
            ["chDB alone: CPU per row (all its threads, body building included), µs", c["cpu_us_per_row"]],
            [
                "paced: target / achieved events/s",
                f"{p['target_events_per_s']:,.0f} / {p['achieved_events_per_s']:,.0f}",
            ],
            ["paced: answers by status", json.dumps(p["statuses"])],
            [
                "paced: POST p50 / p95 ms (from schedule)",
                f"{p['post_latency_ms']['p50']:.1f} / {p['post_latency_ms']['p95']:.1f}",
            ],
            ["paced: sender behind schedule p99 ms", p["send_behind_schedule_ms"]["p99"]],
            ["paced: log append mean ms (server metric)", p["log_append_mean_ms"]],
            [
                "paced: writer rows per insert / insert mean ms",
                f"{p['writer_rows_per_insert']:,.0f} / {p['writer_insert_mean_ms']:.0f}",
            ],
            ["paced: markers / never visible", f"{p['markers']} / {p['markers_never_visible']}"],
            [
                f"paced: {p['dashboards']} dashboards polling p99 by 1m over the last hour: answers, p50 / p99 ms",
                f"{json.dumps(p['dashboard_statuses'])}, {p['dashboard_latency_ms']['p50']:.0f} / "
                f"{p['dashboard_latency_ms']['p99']:.0f}"
                if p["dashboard_latency_ms"]["n"]
                else "none",
            ],
            ["paced: 202->visible p50 s", p["visible_s"]["p50"]],
            ["peak RSS by phase, MiB", json.dumps({k: round(v) for k, v in result["peak_rss_mib_by_phase"].items()})],
            ["broker (tansu) peak RSS, MiB", result.get("broker_peak_rss_mib")],
        ],
    )
    if "points_view_ab" in result:
        ab = result["points_view_ab"]
        print(
            "\nchDB insert with / without the telemetry_points view, alternated: "
            + ", ".join(f"{r:.2f}" for r in ab["ratios"])
            + f" (median {ab['median_ratio']:.2f}); rows/s with "
            + ", ".join(f"{v:,.0f}" for v in ab["rows_per_s"]["with"])
            + ", without "
            + ", ".join(f"{v:,.0f}" for v in ab["rows_per_s"]["without"])
        )
    print("\nacknowledged events per second of the max phase:")
    print("  " + " ".join(f"{n // 1000}k" for n in m["acked_per_second"]))
    print("\ntargets")
    rows = []
    for name, t in result["targets"].items():
        value = t["measured"]
        shown = "-" if value is None else f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        rows.append([name, shown, f"{t['op']} {t['target']:,}", t["met"]])
    rows.append(
        [
            "(aim) end_to_end_events_per_s",
            f"{m['end_to_end_events_per_s']:,.0f}",
            f">= {AIM_EVENTS_PER_S:,}",
            m["end_to_end_events_per_s"] >= AIM_EVENTS_PER_S,
        ]
    )
    print_table(["target", "measured", "goal", "met"], rows)
    if "profile" in result:
        print_profile(
            result["profile"], f"py-spy profile of the server during the max phase ({result['profile_file']})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the max-load phase")
    parser.add_argument("--kafka", action="store_true", help="use a tansu Kafka-protocol broker as the log")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections of the max phase")
    parser.add_argument("--paced-seconds", type=float, default=30.0, help="duration of the paced phase")
    parser.add_argument("--paced-rate", type=float, default=0.0, help="events/s of the paced phase (default: half max)")
    parser.add_argument("--marker-interval", type=float, default=0.5, help="seconds between marker batches")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds between visibility polls")
    parser.add_argument("--dashboards", type=int, default=20, help="dashboards polling p99 in the paced phase")
    parser.add_argument("--dashboard-interval", type=float, default=1.0, help="seconds between a dashboard's polls")
    parser.add_argument("--visible-timeout", type=float, default=30.0, help="give up on a marker after this")
    parser.add_argument("--catchup-timeout", type=float, default=180.0, help="longest wait for the writer")
    parser.add_argument("--chdb-batch-rows", type=int, default=0, help="rows per chDB insert (default: writer's)")
    parser.add_argument("--chdb-max-rows", type=int, default=0, help="rows for the chDB test (0 = all)")
    parser.add_argument(
        "--points-ab", type=int, default=3, help="chDB inserts with and without the points view, runs each (0: none)"
    )
    add_server_arguments(parser, "the max phase", gil=True)
    args = parser.parse_args()
    result = run(args)
    report(result)
    compact = {k: v for k, v in result.items() if k != "profile"}
    compact["max"] = {k: v for k, v in result["max"].items() if k != "acked_per_second"}
    print(json.dumps(compact, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
