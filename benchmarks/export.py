"""CSV export of a large warehouse through `crucible serve`: rows/s and the server's peak RSS.

    python benchmarks/export.py [--events 10000000] [--format csv] [--job] [--py-spy PREFIX]

1. Fills a fresh data dir's chDB with --events synthetic events in a child process
   (the fill of benchmarks/aggregate_query.py: migrations, then INSERT ... SELECT
   FROM numbers() in 1M-row blocks, then OPTIMIZE ... FINAL so no background merge runs
   during the export), and times the export's own SQL and reader without HTTP
   (service/exports/query.py, service/warehouse/stream.py) for comparison.
2. Starts `crucible serve` (--export-async-rows above --events, so the export
   streams), POSTs /api/v1/telemetry/export with every standard field and reads
   the answer in 1 MiB pieces, counting rows and bytes, while the server's RSS
   (with its children) is sampled.
3. With --job, the same export as a background job: the time until the job is
   completed and the download's time.

Prints a table and a final JSON line; asserts nothing. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _support import (
    AUTH_HEADERS,
    CpuMeter,
    PySpy,
    RssSampler,
    add_server_arguments,
    events_parser,
    print_profile,
    print_table,
    result_header,
    run_and_report,
    run_in_child,
    start_server,
)
from aggregate_query import fill_telemetry

EXPORT_PATH = "/api/v1/telemetry/export"
READ_BYTES = 1 << 20
TARGET_ROWS_PER_SECOND = 1_000_000
TARGET_RSS_MIB = 1024


def fill(data_dir: str, events: int, direct: bool, conn: Any) -> None:
    """The child process (chDB allows one process per data path): fill, then chDB alone."""
    import clickhouse_connect

    from service.api.telemetry import FILTERS
    from service.exports.formats import CSV
    from service.exports.query import DEFAULT_FIELDS, export_sql
    from service.settings import Settings
    from service.warehouse.client import Warehouse
    from service.warehouse.stream import text_chunks

    client = clickhouse_connect.get_client(interface="chdb", path=str(Path(data_dir) / "warehouse"))
    started = time.perf_counter()
    fill_telemetry(client, events)
    # One part, as a quiet table ends up: a background merge would compete with the export.
    client.command("OPTIMIZE TABLE telemetry_events FINAL")
    result: dict[str, Any] = {"fill_seconds": time.perf_counter() - started}
    if direct:  # the server's own reading of the warehouse (service/warehouse/stream.py), without HTTP
        sql, parameters = export_sql(DEFAULT_FIELDS, CSV.shape, "telemetry_export")
        parameters.update(dict.fromkeys(FILTERS), snapshot=None)
        warehouse = Warehouse(Settings(data_dir=data_dir))
        started = time.perf_counter()
        size = sum(len(chunk) for chunk in text_chunks(warehouse, sql, parameters, "CSV"))
        result["direct_seconds"] = time.perf_counter() - started
        result["direct_bytes"] = size
    client.close()
    conn.send(result)
    conn.close()


def run_fill(data_dir: Path, events: int, direct: bool) -> dict[str, Any]:
    result: dict[str, Any] = run_in_child(fill, (str(data_dir), events, direct), 600 + events / 50_000, "fill")
    return result


def post(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
    headers = {**AUTH_HEADERS, "Content-Type": "application/json"}
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    return conn.getresponse()


def read_all(answer: http.client.HTTPResponse) -> tuple[int, int, float]:
    """(bytes, line ends, seconds) of reading an answer to its end."""
    started = time.perf_counter()
    size = lines = 0
    while chunk := answer.read(READ_BYTES):
        size += len(chunk)
        lines += chunk.count(b"\n")
    return size, lines, time.perf_counter() - started


def stream_export(port: int, file_format: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    client_cpu = time.process_time()
    started = time.perf_counter()
    answer = post(conn, EXPORT_PATH, {"format": file_format, "async": False})
    first_byte = time.perf_counter() - started
    if answer.status != 200:
        raise RuntimeError(f"export answered {answer.status}: {answer.read()[:500]!r}")
    size, lines, _ = read_all(answer)
    seconds = time.perf_counter() - started
    conn.close()
    return {
        "seconds": seconds,
        "first_byte_seconds": first_byte,
        "bytes": size,
        "lines": lines,
        "client_cores": (time.process_time() - client_cpu) / seconds,
    }


def job_export(port: int, file_format: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    answer = post(conn, EXPORT_PATH, {"format": file_format, "async": True})
    accepted = json.loads(answer.read())["data"]
    while True:
        conn.request("GET", accepted["status_url"], headers=AUTH_HEADERS)
        job = json.loads(conn.getresponse().read())["data"]
        if job["status"] in ("completed", "failed"):
            break
        time.sleep(0.2)
    written = time.perf_counter() - started
    conn.request("GET", accepted["download_url"], headers=AUTH_HEADERS)
    _, _, download = read_all(conn.getresponse())
    conn.close()
    return {"status": job["status"], "rows": job["rows_written"], "seconds": written, "download_seconds": download}


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="crucible-bench-export-"))
    data_dir = root / "data"
    result = result_header("export", events=args.events, format=args.format)
    try:
        print(f"filling {args.events:,} events into {data_dir / 'warehouse'}", flush=True)
        result["fill"] = run_fill(data_dir, args.events, direct=args.format == "csv")
        print(f"filled in {result['fill']['fill_seconds']:.1f}s; starting crucible serve", flush=True)
        server = start_server(data_dir, root / "server.log", ["--export-async-rows", str(args.events + 1)])
        try:
            assert server.process is not None
            rss = RssSampler(server.process.pid, interval=0.1)
            rss.start()
            rss.phase("idle")
            time.sleep(1.0)
            rss.phase("stream")
            cpu = CpuMeter(server.process.pid).start()
            profiler = None
            if args.py_spy:
                profiler = PySpy(server.process.pid, Path(f"{args.py_spy}-export.txt"), args.events / 1e6)
                profiler.start()
            result["stream"] = stream_export(server.port, args.format)
            result["stream"]["cpu"] = cpu.stop()
            if profiler is not None:
                profiler.wait()
                result["profile"] = profiler.summary()
                result["profile_file"] = str(profiler.output)
            if args.job:
                rss.phase("job")
                result["job"] = job_export(server.port, args.format)
            rss.stop()
            result["peak_rss_mib"] = {phase: peak / 2**20 for phase, peak in rss.peaks_by_phase.items()}
        finally:
            server.stop()
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    rate = args.events / result["stream"]["seconds"]
    peak = result["peak_rss_mib"]["stream"]
    result["targets"] = {
        "rows_per_second": {"target": TARGET_ROWS_PER_SECOND, "measured": rate, "met": rate >= TARGET_ROWS_PER_SECOND},
        "peak_rss_mib": {"target": TARGET_RSS_MIB, "measured": peak, "met": peak <= TARGET_RSS_MIB},
    }
    return result


def report(result: dict[str, Any]) -> None:
    events = result["events"]
    stream = result["stream"]
    fill = result["fill"]
    rows = [
        [
            f"POST {EXPORT_PATH} ({result['format']}, streamed)",
            round(stream["seconds"], 2),
            round(events / stream["seconds"]),
            round(stream["bytes"] / stream["seconds"] / 2**20, 1),
            round(result["peak_rss_mib"]["stream"]),
        ]
    ]
    if "direct_seconds" in fill:
        seconds = fill["direct_seconds"]
        rows.append(["same SQL and reader, no HTTP", round(seconds, 2), round(events / seconds), None, None])
    if "job" in result:
        job = result["job"]
        rows.append(["as a job: until completed", round(job["seconds"], 2), round(events / job["seconds"]), None, None])
        rows.append(["as a job: download", round(job["download_seconds"], 2), None, None, None])
    size_mib = stream["bytes"] / 2**20
    print(f"\nexport: {events:,} events, {size_mib:,.0f} MiB, first byte after {stream['first_byte_seconds']:.2f}s")
    print_table(["what", "seconds", "rows/s", "MiB/s", "peak RSS MiB"], rows)
    cpu = stream["cpu"]
    print(
        f"server CPU {cpu['server_cores']:.2f} cores (by thread: "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpu["server_cores_by_thread"].items())
        + f"); this client {stream['client_cores']:.2f} cores; machine idle {cpu['machine_idle_cores']:.2f} cores"
    )
    for name, target in result["targets"].items():
        met = "yes" if target["met"] else "no"
        print(f"target {name}: {target['measured']:,.0f} vs {target['target']:,} -> met {met}")
    if "profile" in result:
        print_profile(result["profile"], f"py-spy profile of the server during the export ({result['profile_file']})")


def main() -> int:
    parser = events_parser(__doc__)
    parser.add_argument("--format", default="csv", choices=("csv", "jsonl", "parquet"), help="the export's format")
    parser.add_argument("--job", action="store_true", help="also export as a background job and download it")
    add_server_arguments(parser, "the export")
    return run_and_report(parser, run, report)


if __name__ == "__main__":
    sys.exit(main())
