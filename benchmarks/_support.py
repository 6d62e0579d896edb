"""Helpers shared by the benchmark scripts: the server child, RSS sampling, /metrics, tables.

Benchmarks print numbers and never assert. They start `crucible serve` (as
`python -m service serve`, the same entry point) through `tests.support.ServerProcess`
on a loopback port, so the repository root must be importable.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from tests.support import ServerProcess, create_admin_key, free_port  # noqa: E402

__all__ = [
    "AUTH_HEADERS",
    "ROOT",
    "CpuMeter",
    "PySpy",
    "RssSampler",
    "ServerProcess",
    "events_parser",
    "free_port",
    "get_json",
    "idle_cores",
    "metric_value",
    "percentiles_ms",
    "print_table",
    "read_metrics",
    "result_header",
    "run_and_report",
    "run_in_child",
    "source_revision",
    "start_server",
]


# The Authorization header of the last server started: an unlimited admin key of its log.
AUTH_HEADERS: dict[str, str] = {}
_LOG_FLAGS_WITH_VALUE = ("--kafka", "--kafka-partitions")


def start_server(data_dir: Path, log_file: Path, extra: Sequence[str] = (), timeout: float = 120.0) -> ServerProcess:
    """`crucible serve --data-dir D --port P [extra]` as a child process, ready to answer,
    after `crucible keys create` made an unlimited admin key on its log (in AUTH_HEADERS)."""
    log_args = ["--data-dir", str(data_dir)]
    for n, flag in enumerate(extra):
        if flag in _LOG_FLAGS_WITH_VALUE:
            log_args += [flag, extra[n + 1]]
        elif flag == "--no-kafka-idempotence":
            log_args.append(flag)
    AUTH_HEADERS["Authorization"] = "Bearer " + create_admin_key(log_args)
    server = ServerProcess(["serve", "--data-dir", str(data_dir), *extra], free_port(), log=log_file)
    return server.start(wait_ready=True, timeout=timeout)


def source_revision() -> str | None:
    """The checked-out commit (plus "+dirty" when files differ), to tell runs apart; None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "service", "schemas", "queries"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def result_header(benchmark: str, **fields: Any) -> dict[str, Any]:
    """The first fields of a benchmark's JSON line: its name, its parameters, the commit and the time."""
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {"benchmark": benchmark, **fields, "commit": source_revision(), "started_at": started}


def run_in_child(target: Callable[..., None], args: Sequence[Any], timeout: float, name: str) -> Any:
    """`target(*args, conn)` in a spawned process, and what it sends on `conn`.

    Fills of chDB run this way: chDB allows one process per data path, so the benchmark's
    own process must not open the server's warehouse."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=target, args=(*args, child), name=name)
    process.start()
    try:
        deadline = time.monotonic() + timeout
        while not parent.poll(1.0):
            if not process.is_alive():
                raise RuntimeError(f"the {name} process exited with {process.exitcode} (see its traceback above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {name} process did not finish in {timeout:.0f} s")
        return parent.recv()
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()


def get_json(url: str, timeout: float = 30.0) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH_HEADERS), timeout=timeout) as answer:
        return json.loads(answer.read())


def read_metrics(base_url: str, timeout: float = 10.0) -> dict[str, float]:
    """The process's Prometheus samples, `name{labels}` -> value."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=timeout) as answer:
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            samples[name] = float(value)
    return samples


def metric_value(samples: dict[str, float], name: str, default: float = 0.0) -> float:
    return samples.get(name, default)


def percentiles_ms(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
    """Percentiles (numpy linear) of durations in seconds, in milliseconds."""
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        empty: dict[str, float | None] = {f"p{q:g}": None for q in qs}
        return empty | {"max": None, "n": 0}
    result: dict[str, float | None] = {f"p{q:g}": float(np.percentile(array, q)) * 1000 for q in qs}
    result["max"] = float(array.max()) * 1000
    result["n"] = int(array.size)
    return result


class RssSampler(threading.Thread):
    """Samples the RSS of a process and its children every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self._process = psutil.Process(pid)
        self._interval = interval
        self._halt = threading.Event()
        self.peak = 0
        self.samples = 0
        self._marks: dict[str, int] = {}
        self._phase = "start"

    def phase(self, name: str) -> None:
        self._phase = name

    @property
    def peaks_by_phase(self) -> dict[str, int]:
        return dict(self._marks)

    def current(self) -> int:
        """The RSS of the process and its children now, in bytes."""
        total = int(self._process.memory_info().rss)
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                total = self.current()
            except psutil.Error:
                break
            self.samples += 1
            self.peak = max(self.peak, total)
            self._marks[self._phase] = max(self._marks.get(self._phase, 0), total)
            self._halt.wait(self._interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


class CpuMeter:
    """CPU seconds used by a process tree and by the whole machine between start() and stop()."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)

    def _tree_seconds(self) -> float:
        return sum(self._tree_times())

    def _tree_times(self) -> tuple[float, float]:
        user = system = 0.0
        for process in [self._process, *self._process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                user += times.user
                system += times.system
        return user, system

    @staticmethod
    def _machine() -> tuple[float, float]:
        times = psutil.cpu_times()
        idle = times.idle + getattr(times, "iowait", 0.0)
        return sum(times) - idle, idle

    def _threads(self) -> dict[int, tuple[str, float]]:
        """Thread id -> (name, CPU seconds); the main thread is named "main" (Linux names others)."""
        found: dict[int, tuple[str, float]] = {}
        with contextlib.suppress(psutil.Error):
            for thread in self._process.threads():
                if thread.id == self._process.pid:
                    name = "main"
                else:
                    try:
                        name = Path(f"/proc/{self._process.pid}/task/{thread.id}/comm").read_text().strip()
                    except OSError:
                        name = "thread"
                found[thread.id] = (name, thread.user_time + thread.system_time)
        return found

    def _children(self) -> dict[int, float]:
        """Child process id -> CPU seconds (ingest workers, a broker started by the server)."""
        found: dict[int, float] = {}
        with contextlib.suppress(psutil.Error):
            for child in self._process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    times = child.cpu_times()
                    found[child.pid] = times.user + times.system
        return found

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._children0 = self._children()
        self._server0 = self._tree_seconds()
        self._system0 = self._tree_times()[1]
        self._threads0 = self._threads()
        self._busy0, self._idle0 = self._machine()
        return self

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        server = self._tree_seconds() - self._server0
        system = self._tree_times()[1] - self._system0
        busy, idle = self._machine()
        by_name: dict[str, float] = {}
        for tid, (name, seconds) in self._threads().items():
            used = seconds - self._threads0.get(tid, (name, 0.0))[1]
            by_name[name] = by_name.get(name, 0.0) + used
        children = sum(seconds - self._children0.get(pid, 0.0) for pid, seconds in self._children().items())
        if children > 0:
            by_name["child processes"] = children
        attributed = sum(by_name.values())
        by_name["(threads that ended)"] = max(server - attributed, 0.0)
        return {
            "wall_s": wall,
            "server_cpu_s": server,
            "server_cores": server / wall,
            "server_system_share": system / server if server else 0.0,
            "machine_busy_cores": (busy - self._busy0) / wall,
            "machine_idle_cores": (idle - self._idle0) / wall,
            "server_cores_by_thread": {
                k: v / wall for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v / wall >= 0.005
            },
        }


def idle_cores(seconds: float) -> float:
    """The machine's idle cores over `seconds`, measured while this process sleeps."""
    meter = CpuMeter(os.getpid()).start()
    time.sleep(seconds)
    return float(meter.stop()["machine_idle_cores"])


class PySpy:
    """`py-spy record` against a pid for a while, in raw (collapsed stack) format."""

    def __init__(
        self, pid: int, output: Path, seconds: float, rate: int = 67, native: bool = False, gil: bool = False
    ) -> None:
        self.output = output
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.command = [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(int(seconds), 1)),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--threads",
            "--output",
            str(output),
        ]
        # --native needs to pause the process for each sample; without it py-spy reads
        # the stacks of the running process (--nonblocking), which barely slows it.
        self.command.append("--native" if native else "--nonblocking")
        if gil:
            self.command.append("--gil")  # only the thread holding the GIL
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PySpy:
        if not Path(self.command[0]).exists():
            print(f"py-spy not found ({self.command[0]}); no profile", file=sys.stderr)
            return self
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def wait(self, timeout: float = 60.0) -> None:
        if self.process is None:
            return
        try:
            _, err = self.process.communicate(timeout=timeout)
            if self.process.returncode != 0:
                print(
                    f"py-spy exited {self.process.returncode}: {err.decode(errors='replace')[-500:]}", file=sys.stderr
                )
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def summary(self, top: int = 20) -> dict[str, list[tuple[str, float]]]:
        """Top functions by self and inclusive share of samples, and share by thread."""
        if not self.output.exists():
            return {}
        self_counts: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        threads: dict[str, int] = {}
        total = 0
        for line in self.output.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            total += count
            threads[frames[0]] = threads.get(frames[0], 0) + count
            self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
            for frame in set(frames[1:]):
                inclusive[frame] = inclusive.get(frame, 0) + count
        if total == 0:
            return {}

        def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
            return [(name, 100.0 * n / total) for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

        return {"self": ranked(self_counts), "inclusive": ranked(inclusive), "threads": ranked(threads)}


def add_server_arguments(parser: Any, profiled: str, gil: bool = False) -> None:
    """Flags every benchmark takes: py-spy profiling of the server, and keeping the temp dir."""
    parser.add_argument("--py-spy", metavar="PREFIX", help=f"py-spy record the server during {profiled}")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too; pauses the server)")
    if gil:
        parser.add_argument("--gil", action="store_true", help="py-spy --gil (only the thread holding the GIL)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")


def events_parser(doc: str) -> argparse.ArgumentParser:
    """The flags of a benchmark over a filled warehouse: its description and --events."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events to fill the warehouse with")
    return parser


def run_and_report(parser: Any, run: Callable[[Any], dict[str, Any]], report: Callable[[dict[str, Any]], None]) -> int:
    """Parse the flags, run, print the table, then the result as one JSON line (profile aside)."""
    result = run(parser.parse_args())
    report(result)
    print(json.dumps({k: v for k, v in result.items() if k != "profile"}, separators=(",", ":")))
    return 0


def print_profile(summary: dict[str, list[tuple[str, float]]], title: str) -> None:
    if not summary:
        return
    print(f"\n{title}")
    for kind in ("threads", "self", "inclusive"):
        print(f"  top by {kind} (% of samples):")
        for name, share in summary[kind]:
            print(f"    {share:6.1f}%  {name}")


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain text table, columns padded to their widest cell."""
    cells = [[str(h) for h in header]] + [[fmt(c) for c in row] for row in rows]
    numeric = [[False] * len(header)] + [
        [isinstance(c, int | float) and not isinstance(c, bool) for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        line = "  ".join(
            cell.rjust(width) if numeric[index][i] else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        print(line.rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def cpu_count() -> int:
    return os.cpu_count() or 1


def wait_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
