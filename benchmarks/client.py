"""The worker client (crucible_client): what a logging call costs, and how fast one process delivers.

    python benchmarks/client.py [--events 500000] [--batch-events 1000] [--keep]

Starts `crucible serve` on a fresh temporary data dir with an unlimited admin key, then:

1. the cost of `Run.log_metrics(step, epoch, loss=..., accuracy=..., lr=...)` to the calling
   thread: in bursts of 500 calls (below a batch, so the client's threads are mostly idle
   while it is timed), and sustained over 200,000 calls back to back while the client's
   threads batch and send them (their share of the GIL is then in the figure);
2. delivery: one process logs --events progress events as fast as it can, then `flush()`
   waits until the server has acknowledged every one (202, durable in the log); events/s
   is events / (first call to flush returning). Memory is capped above --events, so this
   measures the network path, not the spool.

CPU time of the client process and of the server are printed beside the rates, since
the machine is shared. Prints a table and a final JSON line; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _support import AUTH_HEADERS, CpuMeter, print_table, source_revision, start_server  # also sets sys.path

from crucible_client import Client

TARGETS = {"log_metrics_us": (10.0, "<="), "delivered_events_per_s": (100_000, ">=")}
BURST = 500
SUSTAINED_CALLS = 200_000


def call_cost(client: Client, bursts: int) -> float:
    """µs per log_metrics call, timed in bursts smaller than a batch with pauses between."""
    run = client.start_run("exp_bench_calls")
    spent = 0.0
    for burst in range(bursts):
        started = time.perf_counter()
        for step in range(burst * BURST, (burst + 1) * BURST):
            run.log_metrics(step, epoch=1, loss=0.25, accuracy=0.5, lr=3e-4)
        spent += time.perf_counter() - started
        time.sleep(0.002)
    return spent / (bursts * BURST) * 1e6


def sustained_cost(client: Client) -> float:
    run = client.start_run("exp_bench_sustained")
    started = time.perf_counter()
    for step in range(SUSTAINED_CALLS):
        run.log_metrics(step, epoch=1, loss=0.25, accuracy=0.5, lr=3e-4)
    return (time.perf_counter() - started) / SUSTAINED_CALLS * 1e6


def deliver(client: Client, events: int) -> dict[str, Any]:
    run = client.start_run("exp_bench_delivery")
    before = client.stats.accepted
    cpu = psutil.Process().cpu_times()
    started = time.perf_counter()
    for step in range(events):
        run.log_metrics(step, epoch=1, loss=0.25, accuracy=0.5, lr=3e-4)
    logged = time.perf_counter() - started
    assert client.flush(timeout=600), "the server did not take everything within 600 s"
    elapsed = time.perf_counter() - started
    used = psutil.Process().cpu_times()
    return {
        "events": events + 1,
        "logging_s": logged,
        "elapsed_s": elapsed,
        "events_per_s": (events + 1) / elapsed,
        "accepted": client.stats.accepted - before,
        "client_cpu_s": (used.user - cpu.user) + (used.system - cpu.system),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--batch-events", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="crucible-client-bench-"))
    server = start_server(workdir / "data", workdir / "serve.log")
    key = AUTH_HEADERS["Authorization"].removeprefix("Bearer ")
    assert server.process is not None
    try:
        client = Client(
            server.url,
            key,
            spool_dir=workdir / "spool",
            batch_events=args.batch_events,
            max_memory_events=args.events + SUSTAINED_CALLS + args.bursts * BURST + 10,
        )
        per_call = call_cost(client, args.bursts)
        sustained = sustained_cost(client)
        assert client.flush(timeout=600)
        meter = CpuMeter(server.process.pid).start()
        delivery = deliver(client, args.events)
        server_cpu = meter.stop()
        client.close()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    results = {
        "log_metrics_us": per_call,
        "log_metrics_sustained_us": sustained,
        "delivered_events_per_s": delivery["events_per_s"],
        **{f"delivery_{k}": v for k, v in delivery.items() if k != "events_per_s"},
        "server_cores": server_cpu["server_cores"],
        "machine_busy_cores": server_cpu["machine_busy_cores"],
        "server_cores_by_thread": server_cpu["server_cores_by_thread"],
        "batch_events": args.batch_events,
        "revision": source_revision(),
    }
    rows = []
    for name, value in results.items():
        target = TARGETS.get(name)
        rows.append([name, value, f"{target[1]} {target[0]:,}" if target else ""])
    print_table(["figure", "value", "target"], rows)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
