"""Latency of a Welch t-test over two groups of a million samples, end to end through `crucible serve`.

    python benchmarks/statistical_results.py [--per-group 1000000] [--repeat 10]

(Not named statistics.py: a script's folder comes first on sys.path, and that name would
shadow the standard library's `statistics`, which aggregate_query.py imports.)

1. Starts `crucible serve` on a fresh data dir, creates an experiment through the API, stops it.
2. Inserts 2 x --per-group rows directly into the warehouse's telemetry_events (in a child
   process: chDB allows one process per data path) with `INSERT ... SELECT FROM numbers()`:
   models model_a and model_b alternate, measurement `accuracy` normal with means 0.800 and
   0.801 and SD 0.05 (Box-Muller on hash uniforms, so every run has the same data). Rows go in
   directly, not through ingest, for speed: ingest is measured by ingest_throughput.py.
   The same process times statistical_samples.sql alone (the engine and the JSON it writes)
   and runs scipy's Welch test on the values for the check below.
3. Restarts `crucible serve` and times POST /api/v1/statistical-results (welch_t_test, metric
   accuracy, groups model_a and model_b) --repeat times after one warm-up: the query, the
   decoding, the test with its assumption checks, the resource event's append and fold.
4. Checks the statistic and p-value the API answered against scipy's.

Prints a table and a final JSON line; asserts nothing. Loopback only, bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _support import (
    AUTH_HEADERS,
    RssSampler,
    percentiles_ms,
    print_table,
    result_header,
    run_in_child,
    start_server,
)

RESULTS_PATH = "/api/v1/statistical-results"
METRIC = "accuracy"
GROUPS = ["model_a", "model_b"]
BLOCK_ROWS = 1_000_000
TARGET_MS = 1000.0
SYNTHETIC_PARTITION = 1000  # no log uses it: the writer's resume query never sees these rows

FILL_SQL = """
INSERT INTO telemetry_events
    (id, event_name, experiment_id, run_id, model, timestamp, received_at,
     measurements, metadata, data, batch_id, log_partition, log_offset)
SELECT
    concat('evt_stat_', toString(number)),
    'crucible.model.evaluation',
    {experiment:String},
    '',
    if(number % 2 = 0, 'model_a', 'model_b') AS model_name,
    fromUnixTimestamp64Micro(toInt64({start_us:Int64} + number), 'UTC') AS ts,
    ts,
    map('accuracy', if(number % 2 = 0, 0.800, 0.801)
        + 0.05 * sqrt(-2 * log((cityHash64(number, 1) % 1000000 + 0.5) / 1000000))
               * cos(2 * pi() * (cityHash64(number, 2) % 1000000) / 1000000)),
    map('experiment_id', {experiment:String}, 'model', model_name, 'sample_id', toString(intDiv(number, 2))),
    '',
    concat('bench_', toString(intDiv(number, 1000))),
    toUInt32({partition:UInt32}),
    intDiv(number, 1000)
FROM numbers({first:UInt64}, {count:UInt64})
"""

VALUES_SQL = """
SELECT measurements['accuracy'] FROM telemetry_events
WHERE experiment_id = {experiment:String} AND model = {model:String}
FORMAT RowBinary
"""


def fill(data_dir: str, experiment: str, per_group: int, direct_repeat: int, conn: Any) -> None:
    import clickhouse_connect
    import msgspec
    import numpy as np
    from scipy import stats

    import queries
    from service.api.statistics import _SampleRow

    client = clickhouse_connect.get_client(interface="chdb", path=str(Path(data_dir) / "warehouse"))
    started = time.perf_counter()
    total = 2 * per_group
    for first in range(0, total, BLOCK_ROWS):
        client.command(
            FILL_SQL,
            parameters={
                "experiment": experiment,
                "start_us": int(time.time() * 1_000_000) - total,
                "partition": SYNTHETIC_PARTITION,
                "first": first,
                "count": min(BLOCK_ROWS, total - first),
            },
        )
    fill_seconds = time.perf_counter() - started
    samples = [
        np.frombuffer(client.raw_query(VALUES_SQL, parameters={"experiment": experiment, "model": m}), dtype="<f8")
        for m in GROUPS
    ]
    expected = stats.ttest_ind(samples[0], samples[1], equal_var=False)
    # The engine alone, with the service's SQL file and parameters, and the decoding of its answer.
    sql = queries.load("statistical_samples")
    params = {
        "experiment_id": experiment,
        "metric": METRIC,
        "collect_values": True,
        "group_column": "model",
        "group_key": "",
        "groups": GROUPS,
        "label_key": "",
        "label_required": False,
    }
    decoder = msgspec.json.Decoder(_SampleRow)
    query_ms, decode_ms, size = [], [], 0
    for _ in range(direct_repeat + 1):
        t0 = time.perf_counter()
        body = client.raw_query(sql, parameters=params, fmt="JSONEachRow")
        t1 = time.perf_counter()
        rows = [decoder.decode(line) for line in body.splitlines() if line]
        [np.frombuffer(r.values, dtype="<f8") for r in rows]
        t2 = time.perf_counter()
        query_ms.append((t1 - t0) * 1000)
        decode_ms.append((t2 - t1) * 1000)
        size = len(body)
    client.close()
    conn.send(
        {
            "fill_seconds": fill_seconds,
            "rows": total,
            "scipy": {"statistic": float(expected.statistic), "p_value": float(expected.pvalue)},
            "sql_alone_median_ms": statistics.median(query_ms[1:]),
            "decode_median_ms": statistics.median(decode_ms[1:]),
            "sql_answer_bytes": size,
        }
    )
    conn.close()


def run_fill(data_dir: Path, experiment: str, per_group: int, direct_repeat: int) -> dict[str, Any]:
    result: dict[str, Any] = run_in_child(fill, (str(data_dir), experiment, per_group, direct_repeat), 600, "fill")
    return result


def post(conn: http.client.HTTPConnection, path: str, payload: dict[str, Any]) -> tuple[float, int, Any]:
    started = time.perf_counter()
    conn.request("POST", path, body=json.dumps(payload), headers={**AUTH_HEADERS, "Content-Type": "application/json"})
    answer = conn.getresponse()
    body = answer.read()
    return time.perf_counter() - started, answer.status, json.loads(body)


def create_experiment(data_dir: Path, root: Path) -> str:
    server = start_server(data_dir, root / "server-setup.log")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        _, status, body = post(conn, "/api/v1/experiments", {"experiment": {"name": "statistics benchmark"}})
        conn.close()
        if status != 201:
            raise RuntimeError(f"creating the experiment answered {status}: {body}")
        return str(body["data"]["id"])
    finally:
        server.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="crucible-bench-statistics-"))
    data_dir = root / "data"
    result = result_header("statistical_results", per_group=args.per_group, repeat=args.repeat)
    try:
        experiment = create_experiment(data_dir, root)
        print(f"inserting 2 x {args.per_group:,} rows of {experiment} into {data_dir / 'warehouse'}", flush=True)
        filled = run_fill(data_dir, experiment, args.per_group, args.direct_repeat)
        result["fill"] = filled
        print(f"filled in {filled['fill_seconds']:.1f}s; starting crucible serve", flush=True)
        server = start_server(data_dir, root / "server.log")
        try:
            assert server.process is not None
            rss = RssSampler(server.process.pid)
            rss.start()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
            payload = {
                "test": {"experiment_id": experiment, "test_type": "welch_t_test", "metric": METRIC, "groups": GROUPS}
            }
            _, status, answer = post(conn, RESULTS_PATH, payload)  # warm-up, not counted
            if status != 201:
                raise RuntimeError(f"the test answered {status}: {answer}")
            timings = []
            statuses: dict[int, int] = {}
            for _ in range(args.repeat):
                seconds, status, answer = post(conn, RESULTS_PATH, payload)
                statuses[status] = statuses.get(status, 0) + 1
                timings.append(seconds)
            conn.close()
            rss.stop()
            result["peak_rss_mib"] = rss.peak / 2**20
        finally:
            server.stop()
        data = answer["data"]
        result["answer"] = {
            "statistic": data["statistic"],
            "p_value": data["p_value"],
            "sample_sizes": data["sample_sizes"],
        }
        result["end_to_end"] = {
            **percentiles_ms(timings, (50, 95)),
            "statuses": {str(k): v for k, v in statuses.items()},
        }
        expected = filled["scipy"]
        result["scipy_check"] = {
            "statistic_rel_diff": abs(data["statistic"] - expected["statistic"]) / abs(expected["statistic"]),
            "p_value_rel_diff": abs(data["p_value"] - expected["p_value"]) / max(expected["p_value"], 1e-300),
        }
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    median = result["end_to_end"]["p50"]
    result["targets"] = {
        "welch_2x1M_ms": {"target": TARGET_MS, "op": "<=", "measured": median, "met": median <= TARGET_MS}
    }
    return result


def report(result: dict[str, Any]) -> None:
    fill, e2e, answer = result["fill"], result["end_to_end"], result["answer"]
    print(
        f"\nstatistical_results: welch_t_test over {answer['sample_sizes'][0]:,} + {answer['sample_sizes'][1]:,} "
        f"samples ({fill['rows']:,} rows inserted directly in {fill['fill_seconds']:.1f}s)"
    )
    print_table(
        ["what", "median ms", "p95 ms", "max ms", "target"],
        [
            [
                "POST /api/v1/statistical-results",
                round(e2e["p50"], 1),
                round(e2e["p95"], 1),
                round(e2e["max"], 1),
                f"<= {TARGET_MS:g}",
            ],
            ["  statistical_samples.sql on chDB alone", round(fill["sql_alone_median_ms"], 1), None, None, ""],
            ["  decoding its answer (msgspec + numpy)", round(fill["decode_median_ms"], 1), None, None, ""],
        ],
    )
    check = result["scipy_check"]
    print(
        f"answer: t = {answer['statistic']:.6f}, p = {answer['p_value']:.6g}; against scipy on the same values: "
        f"relative differences {check['statistic_rel_diff']:.1e} (t), {check['p_value_rel_diff']:.1e} (p); "
        f"SQL answer {fill['sql_answer_bytes'] / 2**20:,.1f} MiB; "
        f"peak RSS of crucible serve {result['peak_rss_mib']:,.0f} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-group", type=int, default=1_000_000, help="samples in each of the two groups")
    parser.add_argument("--repeat", type=int, default=10, help="timed requests (after one warm-up)")
    parser.add_argument("--direct-repeat", type=int, default=3, help="timed direct chDB runs of the SQL")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    result = run(args)
    report(result)
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
