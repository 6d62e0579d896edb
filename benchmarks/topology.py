"""The distributed topology on one machine against the embedded default, in the same run.

    python benchmarks/topology.py [--seconds 20] [--paced-seconds 15] [--kills 20]
        [--events 10000000] [--rounds 1]

The topology is tests/topology_support.py's: tansu, the ClickHouse HTTP endpoint over chDB,
two `crucible serve --no-writer` and two `crucible writer` processes. Prints:

1. end to end events/s: 1,000-event batches over --connections connections (spread over
   the API processes) for --seconds, until every accepted event is counted by the API;
   the embedded default (`crucible serve`) the same way; A/B alternated --rounds times;
   and the CPU each kind of process of the topology spent per event meanwhile;
2. 202 -> visible at half the topology's rate: marker batches (a fresh experiment each)
   polled through /telemetry/aggregate until counted, p50/p99;
3. --kills kill trials under keyed ingest, cycling a writer, an API process and the
   ClickHouse endpoint (the broker is left out: this tansu keeps its topics in memory;
   tests/test_topology.py kills one that keeps them in S3). Each killed
   process is started again at once. Recovery: from the kill until every event
   acknowledged before it is stored. At the end: events acknowledged, lost, stored twice;
4. p50/p95/p99 by 5 min over one experiment's values within --events rows, through the
   HTTP endpoint (the service's Warehouse client) and in-process chDB on the same
   data directory: the transport's cost.

The load generator runs in this process; the machine's idle cores are printed. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect
import psutil
from _support import AUTH_HEADERS, idle_cores, percentiles_ms, print_table, result_header, start_server

from service.settings import Settings
from service.warehouse.client import Warehouse
from tests.support import TansuBroker, eventually
from tests.topology_support import AGGREGATE_URL, KEYED_PREFIX, KeyedIngest, Topology, build, s3_store

EVENTS_URL = "/api/v1/telemetry/events"
BATCH_EVENTS = 1000
EXPERIMENTS = 8


def batch_body(serial: int) -> bytes:
    return json.dumps(
        {
            "events": [
                {
                    "event_name": ["crucible", "model", "inference"],
                    "measurements": {"latency_ms": float(i % 97), "tokens": 100.0},
                    "metadata": {"experiment_id": f"exp_load_{(serial + i) % EXPERIMENTS}", "model": "m"},
                }
                for i in range(BATCH_EVENTS)
            ]
        }
    ).encode()


async def counted(session: aiohttp.ClientSession, url: str, experiment_id: str | None = None) -> int:
    params = {"agg": "count"} | ({"filter[experiment_id]": experiment_id} if experiment_id else {})
    async with session.get(url + AGGREGATE_URL, params=params) as answer:
        if answer.status != 200:
            return -1
        return int(sum(p["count"] for p in (await answer.json())["data"]))


async def full_load(urls: list[str], headers: dict[str, str], seconds: float, connections: int) -> dict[str, Any]:
    """Batches as fast as they are acknowledged, then the wait until all are counted."""
    bodies = [batch_body(n) for n in range(16)]
    accepted = 0
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        before = await counted(session, urls[0])

        async def connection(n: int) -> None:
            nonlocal accepted
            url = urls[n % len(urls)] + EVENTS_URL
            sent = 0
            while time.monotonic() < deadline:
                body = bodies[(n + sent) % len(bodies)]
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as answer:
                    if answer.status == 202:
                        accepted += BATCH_EVENTS
                sent += 1

        started = time.monotonic()
        await asyncio.gather(*(connection(n) for n in range(connections)))
        acked_in = time.monotonic() - started

        async def all_counted() -> bool:
            seen = await counted(session, urls[-1])
            if time.monotonic() - started > seconds + 30:  # what a stuck run was waiting for
                print(f"  {urls[-1]}: counted {seen:,} of {before + accepted:,}", flush=True)
            return seen >= before + accepted

        await eventually(all_counted, timeout=300, interval=0.2)
        visible_in = time.monotonic() - started
    return {
        "accepted": accepted,
        "ack_events_per_s": accepted / acked_in,
        "end_to_end_events_per_s": accepted / visible_in,
        "catch_up_seconds": visible_in - acked_in,
    }


async def paced_visibility(urls: list[str], headers: dict[str, str], rate: float, seconds: float) -> dict[str, Any]:
    """Batches at `rate` events/s; every 0.5 s a marker batch whose experiment is polled until counted."""
    body = batch_body(0)
    latencies: list[float] = []
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as session:
        stop = time.monotonic() + seconds

        async def load() -> None:
            interval = BATCH_EVENTS / rate
            sent = 0
            started = time.monotonic()
            while time.monotonic() < stop:
                url = urls[sent % len(urls)] + EVENTS_URL
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}):
                    pass
                sent += 1
                await asyncio.sleep(max(started + sent * interval - time.monotonic(), 0))

        async def marker(n: int) -> None:
            experiment = f"exp_marker_{uuid.uuid4().hex[:10]}"
            event = {"event_name": ["crucible", "model", "inference"], "metadata": {"experiment_id": experiment}}
            async with session.post(urls[n % len(urls)] + EVENTS_URL, json={"events": [event]}) as answer:
                if answer.status != 202:
                    return
            acknowledged = time.monotonic()
            while await counted(session, urls[(n + 1) % len(urls)], experiment) < 1:
                await asyncio.sleep(0.05)
            latencies.append(time.monotonic() - acknowledged)

        markers = []
        loader = asyncio.create_task(load())
        n = 0
        while time.monotonic() < stop:
            markers.append(asyncio.create_task(marker(n)))
            n += 1
            await asyncio.sleep(0.5)
        await loader
        await asyncio.wait_for(asyncio.gather(*markers), 120)
    return {"rate": rate, "markers": len(latencies), "visible_ms": percentiles_ms(latencies)}


async def kill_trials(topology: Topology, trials: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {topology.admin}"}
    recoveries: dict[str, list[float]] = {"writer": [], "api": [], "clickhouse": []}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:
        ingest = KeyedIngest(session, topology)
        sender = asyncio.create_task(ingest.run())
        try:
            for trial in range(trials):
                kind = ("writer", "api", "clickhouse")[trial % 3]
                await asyncio.sleep(1.0)
                before = set(ingest.acknowledged)
                killed = time.monotonic()
                await asyncio.to_thread(_kill_and_restart, topology, kind, trial)

                async def caught_up(before: set[str] = before) -> bool:
                    stored = await asyncio.to_thread(_stored_keyed, topology)
                    return stored is not None and stored[1] >= len(before)

                await eventually(caught_up, timeout=180, interval=0.25)
                recoveries[kind].append(time.monotonic() - killed)
        finally:
            ingest.stop()
            await sender

        async def settled() -> bool:
            stored = await asyncio.to_thread(_stored_keyed, topology)
            return stored is not None and stored[1] >= len(ingest.acknowledged)

        await eventually(settled, timeout=180, interval=0.5)
    rows, ids = _stored_keyed(topology) or (0, 0)
    return {
        "trials": trials,
        "acknowledged": len(ingest.acknowledged),
        "lost": max(len(ingest.acknowledged) - ids, 0),
        "stored_twice": rows - ids,
        "retried_requests": ingest.refusals,
        "recovery_s": {kind: _spread(values) for kind, values in recoveries.items()},
    }


def _kill_and_restart(topology: Topology, kind: str, trial: int) -> None:
    if kind == "writer":
        index = trial % len(topology.writers)
        topology.writers[index].kill()
        topology.writers[index] = topology.start(f"writer-k{trial}", topology.writer_args(f"writer-k{trial}"))
    elif kind == "api":
        index = trial % len(topology.apis)
        topology.apis[index].kill()
        topology.apis[index] = topology.start(f"api-k{trial}", topology.api_args(f"api-k{trial}"))
    else:
        topology.clickhouse.kill()
        topology.clickhouse.start()


def _stored_keyed(topology: Topology) -> tuple[int, int] | None:
    """(rows, distinct ids) of the kill trials' events, or None while the endpoint is away.
    Every acknowledged batch is in the log, so once stored they are all there; a batch the
    log took but whose answer was lost is retried under its key and stored under the same
    ids, so distinct ids count each event once."""
    try:
        return topology.stored(f"evt_{KEYED_PREFIX}")
    except Exception:  # the endpoint is still starting
        return None


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": statistics.median(values), "max": max(values)}


def fill_and_compare_quantiles(topology: Topology, events: int, repeat: int) -> dict[str, Any]:
    """--events rows (one experiment in ten) in the endpoint's warehouse; the service's quantile
    query through HTTP, then in-process chDB on the same directory (the endpoint stopped)."""
    client = clickhouse_connect.get_client(host="127.0.0.1", port=topology.clickhouse.port)
    client.command(
        "INSERT INTO telemetry_events (id, event_name, experiment_id, model, timestamp, received_at, measurements)"
        " SELECT concat('evt_fill_', toString(number)), 'crucible.model.inference',"
        " concat('exp_fill_', toString(number % 10)), 'm',"
        " toDateTime64('2026-01-01 00:00:00', 6, 'UTC') + number / 10, now64(6),"
        " map('latency_ms', (number * 7919) % 1000 / 3.0) FROM numbers({events:UInt64})",
        parameters={"events": events},
    )
    client.close()
    params = {
        "event_name": None,
        "experiment_id": "exp_fill_3",
        "run_id": None,
        "model": None,
        "after": None,
        "before": None,
        "metric": "latency_ms",
        "interval_seconds": 300,
        "limit": 100_000,
        "grouped": False,
        "by_metadata": False,
        "group_column": "event_name",
        "group_key": "",
    }
    http_ms = asyncio.run(_time_over_http(topology.clickhouse.url, params, repeat))
    topology.clickhouse.kill()
    local = clickhouse_connect.get_client(interface="chdb", path=str(topology.clickhouse.path))
    import queries

    sql = queries.load("telemetry_quantiles")
    local_ms = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        local.raw_query(sql, parameters=params, fmt="JSONEachRow")
        local_ms.append((time.perf_counter() - started) * 1000)
    local.close()
    topology.clickhouse.start()
    return {
        "events": events,
        "http_median_ms": statistics.median(http_ms[1:]),
        "in_process_median_ms": statistics.median(local_ms[1:]),
    }


async def _time_over_http(url: str, params: dict[str, Any], repeat: int) -> list[float]:
    warehouse = Warehouse(Settings(data_dir=tempfile.mkdtemp(), clickhouse=url))
    await warehouse.start()
    try:
        timings = []
        for _ in range(repeat + 1):
            started = time.perf_counter()
            await warehouse.query("telemetry_quantiles", params)
            timings.append((time.perf_counter() - started) * 1000)
        return timings
    finally:
        await warehouse.stop()


def cpu_seconds(topology: Topology, broker: TansuBroker) -> dict[str, float]:
    """CPU seconds used so far by each kind of process of the topology, and this one (the load)."""

    def used(pids: list[int | None]) -> float:
        total = 0.0
        for pid in pids:
            if pid is None:
                continue
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def pids(servers: list[Any]) -> list[int | None]:
        return [server.process.pid if server.process else None for server in servers]

    endpoint = topology.clickhouse.process
    return {
        "api": used(pids(topology.apis)),
        "writer": used(pids(topology.writers)),
        "clickhouse endpoint": used([endpoint.pid if endpoint else None]),
        "broker": used([broker.pid]),
        "load generator": sum(psutil.Process().cpu_times()[:2]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = result_header("topology", seconds=args.seconds, connections=args.connections)
    result["idle_cores_before"] = idle_cores(1.0)
    rounds: list[dict[str, Any]] = []
    tansu = TansuBroker().start()
    with tempfile.TemporaryDirectory() as scratch, s3_store() as store:
        root = Path(scratch)
        topology = build(root / "topology", tansu.address, store)
        try:
            topology_headers = {"Authorization": f"Bearer {topology.admin}"}
            topology_urls = [api.url for api in topology.apis]
            for n in range(args.rounds):
                embedded = start_server(root / f"embedded-{n}", root / f"embedded-{n}.log")
                try:
                    alone = asyncio.run(full_load([embedded.url], dict(AUTH_HEADERS), args.seconds, args.connections))
                finally:
                    embedded.stop()
                before = cpu_seconds(topology, tansu)
                spread = asyncio.run(full_load(topology_urls, topology_headers, args.seconds, args.connections))
                after = cpu_seconds(topology, tansu)
                spread["cpu_us_per_event"] = {
                    role: (after[role] - before[role]) / spread["accepted"] * 1e6 for role in after
                }
                rounds.append({"embedded": alone, "topology": spread})
            result["rounds"] = rounds
            rate = statistics.median(r["topology"]["end_to_end_events_per_s"] for r in rounds) / 2
            result["paced"] = asyncio.run(paced_visibility(topology_urls, topology_headers, rate, args.paced_seconds))
            result["kills"] = asyncio.run(kill_trials(topology, args.kills))
            if args.events:
                result["quantiles"] = fill_and_compare_quantiles(topology, args.events, args.repeat)
        finally:
            topology.stop()
            tansu.stop()
    result["ratio_topology_to_embedded"] = statistics.median(
        r["topology"]["end_to_end_events_per_s"] / r["embedded"]["end_to_end_events_per_s"] for r in rounds
    )
    return result


def report(result: dict[str, Any]) -> None:
    rows = []
    for n, r in enumerate(result["rounds"]):
        for side in ("embedded", "topology"):
            figures = r[side]
            rows.append((n + 1, side, figures["end_to_end_events_per_s"], figures["ack_events_per_s"],
                         figures["catch_up_seconds"]))  # fmt: skip
    print_table(("round", "deployment", "end to end ev/s", "acknowledged ev/s", "catch-up s"), rows)
    print(f"ratio topology / embedded (median of rounds): {result['ratio_topology_to_embedded']:.2f}")
    print("topology CPU per event in the full-load phase, µs (median of rounds):")
    for role in result["rounds"][0]["topology"]["cpu_us_per_event"]:
        spent = statistics.median(r["topology"]["cpu_us_per_event"][role] for r in result["rounds"])
        print(f"  {role}: {spent:.1f}")
    paced = result["paced"]
    visible = paced["visible_ms"]
    print(f"202 -> visible at {paced['rate']:,.0f} ev/s, {paced['markers']} markers: "
          f"p50 {visible['p50']:.0f} ms, p99 {visible['p99']:.0f} ms")  # fmt: skip
    kills = result["kills"]
    print(f"kill trials: {kills['trials']}, acknowledged {kills['acknowledged']:,}, lost {kills['lost']}, "
          f"stored twice {kills['stored_twice']}, requests retried {kills['retried_requests']}")  # fmt: skip
    for kind, spread in kills["recovery_s"].items():
        print(f"  recovery after killing the {kind}: median {spread['median']} s, max {spread['max']} s")
    if "quantiles" in result:
        q = result["quantiles"]
        print(f"p50/p95/p99 by 5 min over 1 of 10 experiments in {q['events']:,} rows: "
              f"over HTTP {q['http_median_ms']:.0f} ms, in-process {q['in_process_median_ms']:.0f} ms")  # fmt: skip
    print(f"idle cores before the run: {result['idle_cores_before']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="full-load phase, per deployment and round")
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="A/B rounds of the full-load phase")
    parser.add_argument("--kills", type=int, default=20, help="kill trials (writer, API process, ClickHouse in turn)")
    parser.add_argument("--events", type=int, default=10_000_000, help="rows for the quantile comparison (0: skip)")
    parser.add_argument("--repeat", type=int, default=5, help="timed quantile queries per side")
    result = run(parser.parse_args())
    report(result)
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
