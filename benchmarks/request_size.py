"""Small requests against large ones, end to end, on one `crucible serve` in one run.

    python benchmarks/request_size.py [--seconds 15] [--runs 3] [--connections 8]
        [--small-events 250] [--large-events 1000] [--measurements 4] [--kafka]

A worker that reports as MLflow's tracking server lets it (at most 1,000 points per
request) sends 250 events of 4 measurements each. This starts one server and runs the
closed-loop max phase of ingest_throughput.py with that shape and with 1,000-event
batches of the same events, alternated (large, small, small, large, ...), --runs times
each, waiting for the writer to store everything after each phase. For each phase it
prints the end-to-end rate (events stored / (load seconds + catch-up seconds)), the POST
latency, the server's CPU per event by thread, and the machine's idle cores; then the
ratio small / large of each pair. Asserts nothing.
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

from _support import CpuMeter, percentiles_ms, print_table, result_header, start_server
from ingest_throughput import run_generator, wait_for_writer, warehouse_numbers


def phase(base: str, pid: int, events_per_batch: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One closed-loop max phase with batches of `events_per_batch`, until the writer caught up."""
    before = warehouse_numbers(base)
    cpu = CpuMeter(pid)
    config = {
        "mode": "max",
        "url": base,
        "seconds": args.seconds,
        "connections": args.connections,
        "seed": seed,
        "events_per_batch": events_per_batch,
        "measurements": args.measurements,
        "one_experiment": args.one_experiment,
    }
    load = run_generator(config, on_start=cpu.start)
    at_end = warehouse_numbers(base)
    catch_up, caught, caught_up = wait_for_writer(base, at_end["accepted"], args.catchup_timeout)
    used = cpu.stop()  # the catch-up included: the writer's work for these events is theirs
    elapsed = load["end"] - load["start"]
    stored = caught["rows_inserted"] - before["rows_inserted"]
    return {
        "events_per_batch": events_per_batch,
        "seconds": elapsed,
        "accepted": load["accepted"],
        "requests": sum(load["statuses"].values()),
        "statuses": {str(k): v for k, v in sorted(load["statuses"].items())},
        "ack_events_per_s": load["accepted"] / elapsed,
        "catch_up_seconds": catch_up,
        "caught_up": caught_up,
        "end_to_end_events_per_s": stored / (elapsed + catch_up),
        "post_latency_ms": percentiles_ms(load["latencies"]),
        "server_cpu_us_per_event": 1e6 * used["server_cpu_s"] / max(stored, 1),
        "server_cores_by_thread": used["server_cores_by_thread"],
        "machine_idle_cores": used["machine_idle_cores"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support import tansu_broker

    root = Path(tempfile.mkdtemp(prefix="crucible-bench-request-size-"))
    result = result_header(
        "request_size",
        mode="kafka" if args.kafka else "embedded",
        small=args.small_events,
        large=args.large_events,
        measurements=args.measurements,
        one_experiment=args.one_experiment,
        connections=args.connections,
    )
    phases: list[dict[str, Any]] = []
    try:
        with contextlib.ExitStack() as stack:
            extra: list[str] = []
            if args.kafka:
                extra = ["--kafka", stack.enter_context(tansu_broker()), "--no-kafka-idempotence"]
            server = start_server(root / "data", root / "server.log", extra)
            stack.callback(server.stop)
            assert server.process is not None
            for number in range(args.runs):
                order = (args.large_events, args.small_events)
                for events_per_batch in order if number % 2 == 0 else order[::-1]:
                    print(f"run {number + 1}: {events_per_batch}-event batches", flush=True)
                    phases.append(phase(server.url, server.process.pid, events_per_batch, args, seed=len(phases)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["phases"] = phases
    large = [p for p in phases if p["events_per_batch"] == args.large_events]
    small = [p for p in phases if p["events_per_batch"] == args.small_events]
    result["ratios"] = [
        s["end_to_end_events_per_s"] / g["end_to_end_events_per_s"] for s, g in zip(small, large, strict=True)
    ]
    result["median_ratio"] = statistics.median(result["ratios"])
    return result


def report(result: dict[str, Any]) -> None:
    rows = []
    for p in result["phases"]:
        rows.append(
            [
                p["events_per_batch"],
                f"{p['end_to_end_events_per_s']:,.0f}",
                f"{p['ack_events_per_s']:,.0f}",
                f"{p['requests'] / p['seconds']:,.0f}",
                f"{p['post_latency_ms']['p50']:.1f} / {p['post_latency_ms']['p99']:.1f}",
                f"{p['server_cpu_us_per_event']:.1f}",
                f"{p['machine_idle_cores']:.2f}",
                top_threads(p),
            ]
        )
    header = ["events/request", "end to end ev/s", "acked ev/s", "requests/s", "POST p50/p99 ms", "µs/event"]
    print_table([*header, "idle", "cores"], rows)
    print_ratios("small / large", result)


def top_threads(phase: dict[str, Any]) -> str:
    """The five threads of the server that used the most cores in a phase."""
    return ", ".join(f"{name} {cores:.2f}" for name, cores in list(phase["server_cores_by_thread"].items())[:5])


def print_ratios(label: str, result: dict[str, Any]) -> None:
    """Each pair's end-to-end ratio and their median, against the goal of 0.8."""
    ratios = ", ".join(f"{r:.2f}" for r in result["ratios"])
    print(f"\n{label}, end to end, by pair: {ratios} (median {result['median_ratio']:.2f}; goal >= 0.8)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="load seconds of each phase")
    parser.add_argument("--runs", type=int, default=3, help="phases of each request size")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--small-events", type=int, default=250)
    parser.add_argument("--large-events", type=int, default=1000)
    parser.add_argument("--measurements", type=int, default=4, help="measurements per event (1 to 4)")
    parser.add_argument(
        "--one-experiment", action="store_true", help="each request's events of one experiment (else of ten)"
    )
    parser.add_argument("--catchup-timeout", type=float, default=180.0)
    parser.add_argument("--kafka", action="store_true", help="a tansu Kafka-protocol broker as the log")
    result = run(parser.parse_args())
    report(result)
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
