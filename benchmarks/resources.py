"""Resources benchmark: replay at start-up, create latency, list latency, the cost of auth on ingest.

Embedded default, this machine. Phases:

1. replay: a data dir whose crucible.resources holds --events resource events
   (--experiments experiments, the rest updates and state changes of them) is
   written through the embedded log; then `crucible serve` starts on it, and the
   projector's replay time (its log line) and the time to /readyz are reported.
2. list: GET /api/v1/experiments over those experiments, filtered and sorted,
   sequential requests, client-side latency percentiles per query.
3. create: POST /api/v1/experiments one after another (each answer includes
   read-your-writes), latency percentiles.
4. auth: the same app in-process twice, with and without the auth middleware,
   1,000-event ingest batches for --auth-seconds each, alternated; events/s.

    python benchmarks/resources.py                      # ~3 min
    python benchmarks/resources.py --events 100000      # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import random
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from _support import (
    RssSampler,
    metric_value,
    percentiles_ms,
    print_table,
    read_metrics,
    source_revision,
    start_server,
)
from aiohttp import web
from ingest_throughput import build_bodies

from schemas.resources import (
    ExperimentCreated,
    ExperimentPaused,
    ExperimentResumed,
    ExperimentStarted,
    ExperimentUpdated,
    RateLimits,
)
from service.app import create_app
from service.cli.log_commands import keys_create
from service.http.appkeys import PROJECTOR
from service.http.auth import PRINCIPAL, Principal, auth_middleware
from service.log.interface import RESOURCES_TOPIC, Record
from service.log.sqlite import SqliteLog
from service.resources.fold import event_encoder
from service.settings import Settings

TARGETS = {"replay_seconds": 10.0, "create_p99_ms": 20.0, "list_p99_ms": 50.0, "auth_cost_percent": 5.0}
UNLIMITED = RateLimits(read=10**9, write=10**9, ingest=10**12, export=10**9)
STATUSES_CYCLE = (ExperimentStarted, ExperimentPaused, ExperimentResumed)
WORDS = ("ensemble", "voting", "mmlu", "gsm8k", "distill", "sweep", "ablation", "baseline", "llama", "mistral")
APPEND_CHUNK = 20_000


def resource_events(experiments: int, total: int, seed: int = 7) -> list[Any]:
    """`experiments` creations, then updates and start/pause/resume cycles up to `total` events."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    events: list[Any] = []
    ids = [f"exp_{n:012x}" for n in range(experiments)]
    for n, experiment_id in enumerate(ids):
        name = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {n}"
        tags = rng.sample(WORDS, 2)
        events.append(
            ExperimentCreated(
                event_id=f"e{n}",
                at=start + dt.timedelta(seconds=n),
                actor="bench",
                experiment_id=experiment_id,
                name=name,
                config={"model": rng.choice(WORDS), "lr": rng.random()},
                tags=tags,
            )
        )
    cycle_position = dict.fromkeys(ids, 0)
    n = len(events)
    while len(events) < total:
        experiment_id = rng.choice(ids)
        at = start + dt.timedelta(seconds=n)
        if rng.random() < 0.3:
            event: Any = ExperimentUpdated(
                event_id=f"e{n}", at=at, actor="bench", experiment_id=experiment_id, description=f"note {n}"
            )
        else:
            kind = STATUSES_CYCLE[cycle_position[experiment_id]]
            cycle_position[experiment_id] = 1 + cycle_position[experiment_id] % 2  # start, then pause/resume
            event = kind(event_id=f"e{n}", at=at, actor="bench", experiment_id=experiment_id)
        events.append(event)
        n += 1
    return events


async def write_resources(data_dir: Path, experiments: int, total: int) -> float:
    """Append the events through the embedded log; returns the seconds it took."""
    log = SqliteLog(data_dir)
    await log.start()
    started = time.monotonic()
    try:
        events = resource_events(experiments, total)
        for first in range(0, len(events), APPEND_CHUNK):
            chunk = events[first : first + APPEND_CHUNK]
            await log.append(
                [Record(RESOURCES_TOPIC, e.experiment_id.encode(), event_encoder.encode(e)) for e in chunk]
            )
    finally:
        await log.stop()
    return time.monotonic() - started


def request_ms(method: str, url: str, secret: str, body: bytes | None = None) -> tuple[float, int]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"Bearer {secret}"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    return (time.perf_counter() - started) * 1000, status


def wait_for_audit(base: str, timeout: float = 600.0) -> float:
    """Seconds until the audit writer has copied every resource event (from /metrics)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        samples = read_metrics(base)
        position = metric_value(samples, "crucible_resources_position")
        if position and metric_value(samples, "crucible_audit_position") >= position:
            break
        time.sleep(0.5)
    return time.monotonic() - started


LIST_QUERIES = {
    "default (-created_at)": "",
    "status=running, sort=name": "filter[status]=running&sort=name",
    "name~'sweep', sort=-updated_at": "filter[name]=sweep&sort=-updated_at",
    "tag=mmlu, sort=status": "filter[tag]=mmlu&sort=status",
    "created_after, sort=created_at": "filter[created_after]=2026-01-01T12:00:00Z&sort=created_at",
}


def list_latencies(base: str, secret: str, requests: int) -> list[list[Any]]:
    rows = []
    for label, query in LIST_QUERIES.items():
        url = f"{base}/api/v1/experiments?per_page=25&{query}"
        # The first request after a change sorts and filters; the next ones find that cached.
        first_ms, _ = request_ms("GET", url, secret)
        timings = [request_ms("GET", url, secret)[0] / 1000 for _ in range(requests)]
        p = percentiles_ms(timings)
        rows.append([label, first_ms, requests, p["p50"], p["p99"]])
    return rows


def create_latencies(base: str, secret: str, count: int) -> dict[str, Any]:
    timings = []
    statuses: dict[int, int] = {}
    for n in range(count):
        body = json.dumps({"experiment": {"name": f"bench create {n}", "tags": ["bench"]}}).encode()
        elapsed, status = request_ms("POST", f"{base}/api/v1/experiments", secret, body)
        timings.append(elapsed / 1000)
        statuses[status] = statuses.get(status, 0) + 1
    return {**percentiles_ms(timings), "statuses": statuses}


@web.middleware
async def trusting_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """What auth_middleware leaves behind, without authenticating or counting anything."""
    request[PRINCIPAL] = Principal(next(iter(request.app[PROJECTOR].state.api_keys.values())))
    return await handler(request)


async def ingest_rate(with_auth: bool, data_dir: Path, seconds: float, bodies: list[bytes]) -> float:
    """Events/s of POST /telemetry/events in-process, with or without the auth middleware."""
    from aiohttp.test_utils import TestClient, TestServer

    settings = Settings(data_dir=str(data_dir), writer=False, query_threads=1)
    secret = await keys_create(settings, "bench", ["admin"], UNLIMITED, out=io.StringIO())
    app = create_app(settings)
    if not with_auth:  # the baseline: the caller is trusted, nothing is checked
        app.middlewares[app.middlewares.index(auth_middleware)] = trusting_middleware
    client = TestClient(TestServer(app))
    await client.start_server()
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    try:
        events = 0
        deadline = time.monotonic() + seconds
        started = time.monotonic()
        n = 0
        while time.monotonic() < deadline:
            batch = [
                client.post("/api/v1/telemetry/events", data=bodies[(n + k) % len(bodies)], headers=headers)
                for k in range(4)
            ]
            n += 4
            for answer in await asyncio.gather(*batch):
                assert answer.status == 202, await answer.text()
                events += (await answer.json())["data"]["accepted"]
        return events / (time.monotonic() - started)
    finally:
        await client.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="crucible-resources-bench-"))
    result: dict[str, Any] = {"revision": source_revision(), "events": args.events, "experiments": args.experiments}
    try:
        data_dir = work / "data"
        result["write_seconds"] = asyncio.run(write_resources(data_dir, args.experiments, args.events))
        secret = asyncio.run(
            keys_create(Settings(data_dir=str(data_dir)), "bench", ["admin"], UNLIMITED, out=io.StringIO())
        )
        started = time.monotonic()
        server = start_server(data_dir, work / "serve.log", timeout=300)
        result["ready_seconds"] = time.monotonic() - started
        log_text = (work / "serve.log").read_text()
        replayed = re.findall(r"replayed (\d+) resource events in ([\d.]+) s", log_text)
        result["replay_seconds"] = float(replayed[-1][1]) if replayed else None
        assert server.process is not None
        rss = RssSampler(server.process.pid)
        rss.start()
        try:
            # Steady state: the audit writer has copied the whole log into the warehouse.
            result["audit_catch_up_seconds"] = wait_for_audit(server.url)
            result["list"] = list_latencies(server.url, secret, args.list_requests)
            result["create"] = create_latencies(server.url, secret, args.creates)
        finally:
            rss.stop()
            server.stop()
        result["peak_rss_mib"] = rss.peak / 2**20
        rates: dict[str, list[float]] = {"with auth": [], "without auth": []}
        bodies, _ = build_bodies(3)
        for round_number in range(args.auth_rounds):
            # Alternate which goes first: the machine warms up and other work comes and goes.
            for with_auth in (True, False) if round_number % 2 == 0 else (False, True):
                label = "with auth" if with_auth else "without auth"
                ingest_dir = work / f"ingest-{round_number}-{label.replace(' ', '-')}"
                rates[label].append(asyncio.run(ingest_rate(with_auth, ingest_dir, args.auth_seconds, bodies[:20])))
        result["ingest_events_per_second"] = rates
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def report(result: dict[str, Any]) -> None:
    events, experiments = result["events"], result["experiments"]
    print(f"\nresources benchmark ({result['revision']}): {events:,} events, {experiments:,} experiments")
    print(f"  written through the embedded log in {result['write_seconds']:.1f} s")
    print(f"  replay at start-up: {result['replay_seconds']} s (target <= {TARGETS['replay_seconds']} s)")
    ready, audit = result["ready_seconds"], result["audit_catch_up_seconds"]
    print(f"  /readyz after {ready:.1f} s; audit copy complete {audit:.0f} s later")
    print(f"  peak RSS of the server after replay, during list/create: {result['peak_rss_mib']:.0f} MiB\n")
    print_table(["list query (25 per page)", "first ms", "requests", "p50 ms", "p99 ms"], result["list"])
    create = result["create"]
    target = TARGETS["create_p99_ms"]
    print(f"\ncreate experiment: p50 {create['p50']:.2f} ms, p99 {create['p99']:.2f} ms (target <= {target} ms)")
    print(f"  answers: {create['statuses']}")
    rates = result["ingest_events_per_second"]
    with_auth = max(rates["with auth"])
    without = max(rates["without auth"])
    cost = (without - with_auth) / without * 100
    result["auth_cost_percent"] = cost
    print(
        f"ingest in-process, best of {len(rates['with auth'])}: {with_auth:,.0f} events/s with auth and rate limits,"
        f" {without:,.0f} without: {cost:+.1f} % (target <= {TARGETS['auth_cost_percent']} %)"
    )
    print(json.dumps(result, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="resource events in the log (default 1,000,000)")
    parser.add_argument("--experiments", type=int, default=100_000, help="experiments among them (default 100,000)")
    parser.add_argument("--list-requests", type=int, default=200, help="requests per list query (default 200)")
    parser.add_argument("--creates", type=int, default=1_000, help="experiments created one by one (default 1,000)")
    parser.add_argument("--auth-seconds", type=float, default=8.0, help="seconds per ingest run (default 8)")
    parser.add_argument("--auth-rounds", type=int, default=4, help="ingest runs with and without auth (default 4)")
    args = parser.parse_args()
    report(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
