"""Run watch benchmark: what watching runs for silence costs, and how late a silent run fails.

Phases:

1. judge: one round of the watch (service/resources/run_silence.py `judge`) over a state of
   --runs runs (10 per experiment), with 10 % and with all of them running; the rest completed.
   The one watching process does this every --run-stale-check-seconds (5 s by default).
2. listen: what hearing a 1,000-event telemetry record costs the watching process
   (service/resources/run_heartbeats.py), by case, beside decoding the record whole (what
   ingest already spends on each event, roughly).
3. end to end (unless --no-server): `crucible serve --run-stale-check-seconds 1`, an experiment
   whose config says run_stale_seconds 2, --server-runs runs reported started at once, then
   silent: the seconds until GET /api/v1/runs shows each of them failed, and GET /api/v1/runs
   latency (status comes from the resources fold: the watch adds nothing to it).

    python benchmarks/run_watch.py                 # ~1 min
    python benchmarks/run_watch.py --runs 10000 --no-server
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
from _support import AUTH_HEADERS, percentiles_ms, print_table, result_header, run_and_report, start_server

from schemas.resources import ExperimentCreated, RunCompleted, RunStarted
from schemas.telemetry import RECORD_CONTENT_TYPE, RECORD_EVENTS_HEADER, TelemetryEvent, TelemetryRecord
from service.log.interface import TELEMETRY_TOPIC, StoredRecord
from service.resources.fold import Resources
from service.resources.run_heartbeats import SEARCH_AT_MOST, RunHeartbeats
from service.resources.run_silence import judge

T0 = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.UTC)
RUNS_PER_EXPERIMENT = 10
EVENTS_PER_RECORD = 1_000
SERVER_LIMIT_SECONDS = 2
SERVER_CHECK_SECONDS = 1.0


# -- 1. judge ----------------------------------------------------------------------------------


def state_of(runs: int, running_share: float) -> Resources:
    """`runs` runs, 10 per experiment, the first `running_share` of each experiment's running."""
    state = Resources()
    running_per_experiment = round(RUNS_PER_EXPERIMENT * running_share)
    for e in range(runs // RUNS_PER_EXPERIMENT):
        experiment_id = f"exp_{e}"
        state.apply(ExperimentCreated(event_id=experiment_id, at=T0, experiment_id=experiment_id, name="E"), 0)
        for r in range(RUNS_PER_EXPERIMENT):
            fields = {
                "at": T0,
                "run_id": f"run_{e}_{r}",
                "experiment_id": experiment_id,
                "reported_at": T0,
            }
            state.apply(RunStarted(event_id=f"s{e}_{r}", **fields), 0)
            if r >= running_per_experiment:
                state.apply(RunCompleted(event_id=f"c{e}_{r}", **fields), 0)
    return state


def time_judge(runs: int, running_share: float, repeat: int) -> dict[str, Any]:
    state = state_of(runs, running_share)
    horizon = T0 + dt.timedelta(seconds=10)  # nobody silent yet: the usual round, no verdicts
    began = dict.fromkeys(state.open_runs, T0)  # every run listened for, and heard, as in a steady state
    heard = dict.fromkeys(state.open_runs, T0 + dt.timedelta(seconds=5))
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        verdicts = judge(state, heard, began, horizon, 300, horizon)
        seconds.append(time.perf_counter() - started)
    assert not verdicts.events
    median = statistics.median(seconds)
    running = sum(run.status == "running" for run in state.runs.values())
    return {"runs": runs, "running": running, "round_ms": median * 1000, "us_per_running_run": median / running * 1e6}


# -- 2. listen ---------------------------------------------------------------------------------


def telemetry_record(run_id: str) -> StoredRecord:
    """A 1,000-event record of one run's progress, as ingest appends it (~285 bytes an event)."""
    events = [
        TelemetryEvent(
            event_name=["crucible", "run", "progress"],
            measurements={"progress": i / EVENTS_PER_RECORD, "loss": 0.5, "accuracy": 0.8, "step": float(i)},
            metadata={"experiment_id": "exp_1", "run_id": run_id, "model": "gpt-4", "request_id": f"req_{i:06d}"},
            timestamp=T0,
            id=f"evt_{i:012d}",
        )
        for i in range(EVENTS_PER_RECORD)
    ]
    value = msgspec.json.encode(TelemetryRecord(received_at=T0, batch_id="", events=events))
    headers = (("content-type", RECORD_CONTENT_TYPE), (RECORD_EVENTS_HEADER, str(EVENTS_PER_RECORD).encode()))
    return StoredRecord(TELEMETRY_TOPIC, 0, 0, b"exp_1", value, headers, int(T0.timestamp() * 1000))


def time_hearing(watched: list[str], heard_before: list[str], record: StoredRecord, repeat: int) -> float:
    """Median µs for `hear(record)` with `watched` runs of its experiment, `heard_before` heard this round."""
    seconds = []
    for _ in range(repeat):
        heartbeats = RunHeartbeats()
        heartbeats.watch({"exp_1": watched}, since=T0)
        if heard_before:
            heartbeats.hear(telemetry_record_for(heard_before))
        started = time.perf_counter()
        heartbeats.hear(record)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1e6


_small_records: dict[tuple[str, ...], StoredRecord] = {}


def telemetry_record_for(run_ids: list[str]) -> StoredRecord:
    """A small record naming each of `run_ids` (to mark them heard this round)."""
    key = tuple(run_ids)
    if key not in _small_records:
        events = [
            TelemetryEvent(event_name=["x"], metadata={"experiment_id": "exp_1", "run_id": r}, timestamp=T0, id=r)
            for r in run_ids
        ]
        value = msgspec.json.encode(TelemetryRecord(received_at=T0, batch_id="", events=events))
        headers = (("content-type", RECORD_CONTENT_TYPE), (RECORD_EVENTS_HEADER, str(len(events)).encode()))
        _small_records[key] = StoredRecord(TELEMETRY_TOPIC, 0, 0, b"exp_1", value, headers, 0)
    return _small_records[key]


def time_listening(repeat: int) -> list[dict[str, Any]]:
    record = telemetry_record("run_live")
    others = [f"run_other_{n}" for n in range(SEARCH_AT_MOST + 4)]
    cases = [
        ("experiment without watched runs", [], [], "skipped by its key"),
        ("every watched run heard this round", ["run_live", *others[:3]], ["run_live", *others[:3]], "skipped"),
        ("its run, unheard this round", ["run_live"], [], "1 search, found"),
        ("a silent run of the same experiment", ["run_live", "run_dead"], ["run_live"], "1 search, missed"),
        (f"{SEARCH_AT_MOST} silent runs of it", others[:SEARCH_AT_MOST], [], f"{SEARCH_AT_MOST} searches, missed"),
        (f"{SEARCH_AT_MOST + 1}+ unheard runs", ["run_live", *others], [], "decoded"),
    ]
    rows = []
    for name, watched, heard_before, how in cases:
        per_record = time_hearing(watched, heard_before, record, repeat)
        rows.append({"case": name, "how": how, "us_per_record": per_record, "us_per_event": per_record / 1000})
    decoder = msgspec.json.Decoder(TelemetryRecord)
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        decoder.decode(record.value)
        seconds.append(time.perf_counter() - started)
    whole = statistics.median(seconds) * 1e6
    rows.append({"case": "for scale: decoding the record whole", "how": "", "us_per_record": whole})
    rows[-1]["us_per_event"] = whole / 1000
    return rows


# -- 3. end to end -----------------------------------------------------------------------------


def request(url: str, body: Any | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {**AUTH_HEADERS, "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def end_to_end(runs: int, list_requests: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="run-watch-"))
    extra = ["--run-stale-check-seconds", str(SERVER_CHECK_SECONDS)]
    server = start_server(work / "data", work / "serve.log", extra)
    try:
        base = server.url + "/api/v1"
        config = {"run_stale_seconds": SERVER_LIMIT_SECONDS}
        experiment = request(base + "/experiments", {"experiment": {"name": "silent", "config": config}})["data"]
        events = [
            {
                "event_name": ["crucible", "run", "started"],
                "metadata": {"experiment_id": experiment["id"], "run_id": f"run_{n:05d}"},
            }
            for n in range(runs)
        ]
        reported = time.monotonic()
        request(base + "/telemetry/events", {"events": events})
        failed_url = f"{base}/runs?filter[status]=failed&per_page=1"
        while request(failed_url)["meta"]["total"] < runs:
            time.sleep(0.05)
        all_failed = time.monotonic() - reported
        latencies = []
        for _ in range(list_requests):
            started = time.perf_counter()
            request(base + "/runs?per_page=100")
            latencies.append(time.perf_counter() - started)
        return {"runs": runs, "all_failed_after_s": all_failed, "list_runs_ms": percentiles_ms(latencies)}
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)


# -- the whole -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    result = result_header("run_watch", runs=args.runs)
    result["judge"] = [
        time_judge(runs, share, args.repeat) for runs in (1_000, args.runs) for share in (0.1, 1.0)
    ]  # fmt: skip
    result["listen"] = time_listening(args.repeat * 10)
    if not args.no_server:
        result["end_to_end"] = end_to_end(args.server_runs, args.list_requests)
    return result


def report(result: dict[str, Any]) -> None:
    print("one round of the watch (judge), no verdicts:")
    print_table(
        ["runs", "running", "ms per round", "us per running run"],
        [
            [j["runs"], j["running"], round(j["round_ms"], 2), round(j["us_per_running_run"], 2)]
            for j in result["judge"]
        ],
    )
    print(f"\nhearing one {EVENTS_PER_RECORD:,}-event telemetry record (the watching process only):")
    print_table(
        ["record of", "how", "us per record", "us per event"],
        [[r["case"], r["how"], round(r["us_per_record"], 1), round(r["us_per_event"], 4)] for r in result["listen"]],
    )
    if "end_to_end" in result:
        e2e = result["end_to_end"]
        listed = e2e["list_runs_ms"]
        print(
            f"\nend to end: {e2e['runs']} runs silent after one report, limit {SERVER_LIMIT_SECONDS} s, rounds every "
            f"{SERVER_CHECK_SECONDS:g} s: all failed in GET /runs after {e2e['all_failed_after_s']:.2f} s; "
            f"GET /runs?per_page=100 p50 {listed['p50']:.1f} ms, p95 {listed['p95']:.1f} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs in the largest judged state")
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions of each measurement")
    parser.add_argument("--no-server", action="store_true", help="skip the end-to-end phase")
    parser.add_argument("--server-runs", type=int, default=200, help="runs reported to the server")
    parser.add_argument("--list-requests", type=int, default=50, help="timed GET /api/v1/runs")
    return run_and_report(parser, run, report)


if __name__ == "__main__":
    raise SystemExit(main())
