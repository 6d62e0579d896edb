"""The worker client (crucible_client): what a logging call costs, and how fast one process
delivers, with the spool's write-ahead off (as before it existed), on (the default), and on
with an fsync per batch, alternated on one server.

    python benchmarks/client.py [--events 500000] [--rounds 3] [--variants off,on,fsync] [--keep]

Starts `crucible serve` on a fresh temporary data dir with an unlimited admin key, warms
up with a client whose figures are not kept, then, for each round and each variant in
turn (each round starting with the next one), a new client that measures:

1. the cost of `Run.log_metrics(step, epoch, loss=..., accuracy=..., lr=...)` to the calling
   thread: in bursts of 500 calls (below a batch, so the client's threads are mostly idle
   while it is timed), and sustained over 200,000 calls back to back while the client's
   threads batch, write ahead and send them (their share of the GIL is then in the figure);
2. delivery: one process logs --events progress events as fast as it can, then `flush()`
   waits until the server has acknowledged every one (202, durable in the log); events/s
   is events / (first call to flush returning). Memory is capped above --events, so this
   measures the network path (and the write-ahead), not reading the spool back.

CPU time of the client process and of the server, and the machine's idle cores, are
printed beside the rates, since the machine is shared. Prints a table per phase, the
medians per variant and a final JSON line; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from _support import (  # also sets sys.path
    AUTH_HEADERS,
    CpuMeter,
    ServerProcess,
    idle_cores,
    print_table,
    source_revision,
    start_server,
)

from crucible_client import Client

TARGETS = {"log_metrics_us": (10.0, "<="), "delivered_events_per_s": (100_000, ">=")}
BURST = 500
SUSTAINED_CALLS = 200_000
VARIANTS: dict[str, dict[str, bool]] = {
    "off": {"write_ahead": False},  # the client before write-ahead: spool only on spill
    "on": {"write_ahead": True},
    "fsync": {"write_ahead": True, "spool_fsync": True},
}
QUIET_SAMPLE_SECONDS = 2.0


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


def phase(
    server: ServerProcess, key: str, spool: Path, options: dict[str, bool], args: argparse.Namespace
) -> dict[str, Any]:
    """One client with `options`: its call cost and its delivery rate."""
    client = Client(
        server.url,
        key,
        spool_dir=spool,
        batch_events=args.batch_events,
        max_memory_events=args.events + SUSTAINED_CALLS + args.bursts * BURST + 10,
        **options,
    )
    per_call = call_cost(client, args.bursts)
    sustained = sustained_cost(client)
    assert client.flush(timeout=600)
    assert server.process is not None
    meter = CpuMeter(server.process.pid).start()
    delivery = deliver(client, args.events)
    usage = meter.stop()
    spooled = client.stats.spooled
    client.close()
    return {
        "log_metrics_us": per_call,
        "log_metrics_sustained_us": sustained,
        "delivered_events_per_s": delivery["events_per_s"],
        **{f"delivery_{k}": v for k, v in delivery.items() if k != "events_per_s"},
        "spooled_events": spooled,
        "server_cores": usage["server_cores"],
        "machine_idle_cores": usage["machine_idle_cores"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--batch-events", type=int, default=1000)
    parser.add_argument("--bursts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="each variant once per round, alternated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="of " + ", ".join(VARIANTS))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    variants = args.variants.split(",")

    workdir = Path(tempfile.mkdtemp(prefix="crucible-client-bench-"))
    quiet = idle_cores(QUIET_SAMPLE_SECONDS)
    server = start_server(workdir / "data", workdir / "serve.log")
    key = AUTH_HEADERS["Authorization"].removeprefix("Bearer ")
    assert server.process is not None
    phases: list[dict[str, Any]] = []
    try:
        # Not measured: the first client of a process pays for imports and warm caches.
        warm_up = argparse.Namespace(**{**vars(args), "events": 10_000, "bursts": 10})
        phase(server, key, workdir / "spool", VARIANTS[variants[0]], warm_up)
        for round_ in range(args.rounds):
            # Each round starts with the next variant, so that none is always first.
            for variant in variants[round_ % len(variants) :] + variants[: round_ % len(variants)]:
                result = phase(server, key, workdir / "spool", VARIANTS[variant], args)
                phases.append({"round": round_ + 1, "variant": variant, **result})
                print(
                    f"round {round_ + 1} {variant:>5}: log_metrics {result['log_metrics_us']:.2f} µs"
                    f" (sustained {result['log_metrics_sustained_us']:.2f}),"
                    f" delivered {result['delivered_events_per_s']:,.0f} events/s,"
                    f" client CPU {result['delivery_client_cpu_s']:.1f} s, server {result['server_cores']:.2f} cores,"
                    f" idle {result['machine_idle_cores']:.2f} cores",
                    flush=True,
                )
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = []
    summary: dict[str, dict[str, float]] = {}
    for variant in variants:
        mine = [p for p in phases if p["variant"] == variant]
        summary[variant] = {
            name: statistics.median(p[name] for p in mine)
            for name in (
                "log_metrics_us",
                "log_metrics_sustained_us",
                "delivered_events_per_s",
                "delivery_client_cpu_s",
                "machine_idle_cores",
            )
        }
        for name, value in summary[variant].items():
            target = TARGETS.get(name)
            runs = ", ".join(f"{p[name]:,.2f}" for p in mine)
            rows.append([variant, name, value, runs, f"{target[1]} {target[0]:,}" if target else ""])
    print(f"idle cores before the server started: {quiet:.2f} of {os.cpu_count()}")
    print_table(["variant", "figure", "median", "runs", "target"], rows)
    if "off" in summary:
        for variant in summary:
            ratio = summary[variant]["delivered_events_per_s"] / summary["off"]["delivered_events_per_s"]
            print(f"delivered events/s, {variant} against off: {ratio:.3f}")
    print(
        json.dumps(
            {
                "idle_cores_before": quiet,
                "summary": summary,
                "phases": phases,
                "batch_events": args.batch_events,
                "revision": source_revision(),
            }
        )
    )


if __name__ == "__main__":
    main()
