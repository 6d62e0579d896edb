"""What a worker loses when it is SIGKILLed: the server up and down, write-ahead off, on, and with fsync.

    python benchmarks/client_kills.py [--kills 8] [--rate 1000] [--seed 1] [--keep]

Starts `crucible serve` on a fresh temporary data dir and port. For each case (server up
or down; the clients' write-ahead off, as before it existed, on, and on with
`spool_fsync`), starts workers one after the other on one spool
(tests/client/killed_worker.py: `crucible.run.progress` steps at --rate per second, each
step's time noted) and SIGKILLs each at a random instant 0.2-3 s after its first step;
each next worker adopts the spool. With the server down, the server is stopped while the
workers run and started again after the last kill. A client then sends what is left of
the spool, the writer catches up, and every run's stored events are counted by event id
and by step: lost (logged and not stored), stored twice, and the bound (the steps logged
in the last `flush_interval`, 0.5 s, before the kill). Prints a table and a final JSON
line; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

from _support import (
    AUTH_HEADERS,
    ServerProcess,
    free_port,
    get_json,
    print_table,
    source_revision,
)  # also sets sys.path

from crucible_client import Client
from tests.client.killed_worker import Killed, WorkerProcess
from tests.support import create_admin_key, log_positions

# How the workers' clients spool: as before write-ahead existed (for comparison), the default, with fsync.
SPOOLING = {"write-ahead off": ["--no-write-ahead"], "write-ahead": [], "write-ahead + fsync": ["--spool-fsync"]}
CASES = [(state, spooling) for state in ("up", "down") for spooling in SPOOLING]
KILL_AFTER = (0.2, 3.0)  # seconds after the worker's first step
EVENTS_URL = "/api/v1/telemetry/events"


def kill_workers(
    url: str, key: str, spool: Path, directory: Path, args: argparse.Namespace, spooling: str
) -> list[Killed]:
    """`args.kills` workers one after the other on `spool`, each killed at a random instant."""
    rng = random.Random(f"{args.seed} {spool.name}")
    extra = SPOOLING[spooling]
    killed = []
    for _ in range(args.kills):
        worker = WorkerProcess(url, key, spool, "exp_bench_kills", directory, args.rate, *extra)
        deadline = time.monotonic() + 60
        while not worker.has_logged():
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not start")
            time.sleep(0.02)
        time.sleep(rng.uniform(*KILL_AFTER))
        killed.append(worker.kill())
    return killed


def deliver_spool(url: str, key: str, spool: Path) -> None:
    with Client(url, key, spool_dir=spool) as client:
        if not client.flush(timeout=300):
            raise TimeoutError("the spool was not delivered in 300 s")


def wait_caught_up(data_dir: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while (positions := log_positions(data_dir))[1] < positions[0]:
        if time.monotonic() > deadline:
            raise TimeoutError("the writer did not catch up")
        time.sleep(0.2)


def stored(url: str, run_id: str) -> tuple[Counter[int], int]:
    """(how often each progress step is stored, events stored more than once by id) of a run."""
    steps: Counter[int] = Counter()
    ids: Counter[str] = Counter()
    params = {"filter[run_id]": run_id, "per_page": "100"}
    while True:
        page = get_json(f"{url}{EVENTS_URL}?{urllib.parse.urlencode(params)}")
        for event in page["data"]:
            ids[event["id"]] += 1
            if event["event_name"][-1] == "progress":
                steps[int(event["measurements"]["step"])] += 1
        if not page["meta"]["has_more"]:
            return steps, sum(n - 1 for n in ids.values() if n > 1)
        params["cursor"] = page["meta"]["next_cursor"]


def count(url: str, killed: Killed) -> dict[str, Any]:
    steps, twice_by_id = stored(url, killed.run_id)
    lost = killed.lost(steps)
    return {
        "logged": len(killed.logged),
        "lost": len(lost),
        "bound": killed.bound,
        "stored_twice": twice_by_id + sum(n - 1 for n in steps.values() if n > 1),
        "oldest_lost_s": max((killed.logged_before_kill(step) for step in lost), default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8, help="per case")
    parser.add_argument("--rate", type=float, default=1000.0, help="steps per second each worker logs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="crucible-client-kills-"))
    data_dir = workdir / "data"
    key = create_admin_key(["--data-dir", str(data_dir)])
    AUTH_HEADERS["Authorization"] = f"Bearer {key}"  # for get_json
    server = ServerProcess(["serve", "--data-dir", str(data_dir)], free_port(), log=workdir / "serve.log")
    killed: dict[str, list[Killed]] = {}
    try:
        server.start()
        for n, (state, spooling) in enumerate(CASES):
            case = f"server {state}, {spooling}"
            spool = workdir / f"spool-{n}"
            if state == "down":
                server.stop()
            killed[case] = kill_workers(server.url, key, spool, workdir, args, spooling)
            if state == "down":
                server.start()
            deliver_spool(server.url, key, spool)
            print(f"{case}: {args.kills} workers killed, their spool delivered", flush=True)
        wait_caught_up(data_dir)
        counts = {case: [count(server.url, k) for k in runs] for case, runs in killed.items()}
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = []
    for case, results in counts.items():
        lost = [r["lost"] for r in results]
        bound = [r["bound"] for r in results]
        rows.append(
            [
                case,
                f"{statistics.median(lost):.0f} ({min(lost)}-{max(lost)})",
                f"{statistics.median(bound):.0f} ({min(bound)}-{max(bound)})",
                sum(r["lost"] > r["bound"] for r in results),
                f"{max(r['oldest_lost_s'] for r in results):.3f}",
                sum(r["stored_twice"] for r in results),
            ]
        )
    print(f"{args.kills} kills per case, {args.rate:,.0f} steps/s, bound: the steps of the last 0.5 s")
    headers = ["case", "lost per kill", "bound", "kills over it", "oldest lost (s)", "stored twice"]
    print_table(headers, rows)
    print(json.dumps({"rate": args.rate, "kills": args.kills, "counts": counts, "revision": source_revision()}))


if __name__ == "__main__":
    main()
