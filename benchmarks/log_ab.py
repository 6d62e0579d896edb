"""End-to-end ingest through Kafka against the embedded log, alternated in one run.

    python benchmarks/log_ab.py [--seconds 20] [--runs 3] [--connections 8] [--events-per-request 1000]

Each phase starts a fresh `crucible serve` on a fresh data dir, on the embedded log or
on a tansu Kafka-protocol broker started for it (`--kafka HOST:PORT`), runs the
closed-loop max phase of ingest_throughput.py with 1,000-event batches, waits until
the writer stored everything acknowledged, and stops. Phases alternate (embedded,
Kafka, Kafka, embedded, ...) --runs times each. Prints each phase's end-to-end rate,
CPU per event of the server and of the broker, the machine's idle cores, and the
ratio Kafka / embedded of each pair. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _support import CpuMeter, print_table, result_header, start_server
from ingest_throughput import broker_process
from request_size import phase, print_ratios, top_threads

MODES = ("embedded", "kafka")


def one_phase(mode: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from tests.support import tansu_broker

    root = Path(tempfile.mkdtemp(prefix=f"crucible-bench-log-{mode}-"))
    try:
        with contextlib.ExitStack() as stack:
            extra: list[str] = []
            broker_cpu = None
            if mode == "kafka":
                extra = ["--kafka", stack.enter_context(tansu_broker()), "--no-kafka-idempotence"]
                broker = broker_process()
                broker_cpu = CpuMeter(broker.pid).start() if broker is not None else None
            server = start_server(root / "data", root / "server.log", extra)
            stack.callback(server.stop)
            assert server.process is not None
            measured = phase(server.url, server.process.pid, args.events_per_request, args, seed)
            if broker_cpu is not None:
                # From the broker's start: creating the topics is part of the price, and small.
                measured["broker_cpu_us_per_event"] = (
                    1e6 * broker_cpu.stop()["server_cpu_s"] / max(measured["accepted"], 1)
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"mode": mode, **measured}


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = result_header(
        "log_ab", events_per_request=args.events_per_request, connections=args.connections, seconds=args.seconds
    )
    phases = []
    for number in range(args.runs):
        for mode in MODES if number % 2 == 0 else MODES[::-1]:
            print(f"run {number + 1}: {mode}", flush=True)
            phases.append(one_phase(mode, args, seed=len(phases)))
    result["phases"] = phases
    rates = {mode: [p["end_to_end_events_per_s"] for p in phases if p["mode"] == mode] for mode in MODES}
    result["ratios"] = [k / e for k, e in zip(rates["kafka"], rates["embedded"], strict=True)]
    result["median_ratio"] = statistics.median(result["ratios"])
    return result


def report(result: dict[str, Any]) -> None:
    rows = [
        [
            p["mode"],
            f"{p['end_to_end_events_per_s']:,.0f}",
            f"{p['post_latency_ms']['p50']:.1f} / {p['post_latency_ms']['p99']:.1f}",
            f"{p['server_cpu_us_per_event']:.1f}",
            f"{p['broker_cpu_us_per_event']:.1f}" if "broker_cpu_us_per_event" in p else "-",
            f"{p['machine_idle_cores']:.2f}",
            top_threads(p),
        ]
        for p in result["phases"]
    ]
    print_table(["log", "end to end ev/s", "POST p50/p99 ms", "server µs/ev", "broker µs/ev", "idle", "cores"], rows)
    print_ratios("Kafka / embedded", result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load seconds of each phase")
    parser.add_argument("--runs", type=int, default=3, help="phases of each log")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--events-per-request", type=int, default=1000)
    parser.add_argument("--measurements", type=int, default=0, help="measurements per event (0: two or three)")
    parser.add_argument("--one-experiment", action="store_true", help="each request's events of one experiment")
    parser.add_argument("--catchup-timeout", type=float, default=180.0)
    result = run(parser.parse_args())
    report(result)
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
