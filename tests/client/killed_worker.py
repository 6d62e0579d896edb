"""A worker to be SIGKILLed, and the handle that starts and kills it (tests and benchmarks).

The worker logs `crucible.run.progress` steps at a steady rate until it dies, and notes
when it logged each one in a memory-mapped file (`Progress`): the kernel keeps what the
process wrote there when it is killed, as it keeps the spool's writes.

    python -m tests.client.killed_worker URL KEY SPOOL RUN_ID EXPERIMENT_ID PROGRESS RATE
        [--checkpoint FILE] [--keep-upload-records] [--spool-fsync] [--no-write-ahead]
"""

from __future__ import annotations

import argparse
import mmap
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # where the worker process imports `tests` from
FLUSH_INTERVAL = 0.5  # the client's default, which the worker keeps: the bound on what a kill loses
_COUNT = struct.Struct("<q")
_TIME = struct.Struct("<d")


class Progress:
    """How many steps were logged, and the time (time.time()) each one was: the worker's side."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.capacity = capacity
        size = _COUNT.size + capacity * _TIME.size
        with open(path, "a+b") as file:
            file.truncate(size)
            self._map = mmap.mmap(file.fileno(), size)

    def logging(self, step: int) -> None:
        """Noted before the call that logs `step`: a worker killed in between counts it as logged, and lost."""
        _TIME.pack_into(self._map, _COUNT.size + step * _TIME.size, time.time())
        _COUNT.pack_into(self._map, 0, step + 1)


def logged_times(path: Path) -> list[float]:
    """When each step a worker logged was, from its progress file (read, not written: a live worker may be on it)."""
    raw = path.read_bytes() if path.exists() else b""
    if len(raw) < _COUNT.size:
        return []
    [count] = _COUNT.unpack_from(raw, 0)
    return [_TIME.unpack_from(raw, _COUNT.size + n * _TIME.size)[0] for n in range(count)]


@dataclass
class Killed:
    """A killed worker's run, when it logged each step, and when it was killed."""

    run_id: str
    logged: list[float]
    killed_at: float

    @property
    def bound(self) -> int:
        """The steps logged in the last flush interval before the kill: the most it may lose."""
        return sum(1 for t in self.logged if t > self.killed_at - FLUSH_INTERVAL)

    def lost(self, stored: Collection[int]) -> list[int]:
        """The steps logged and not among `stored`."""
        return [step for step in range(len(self.logged)) if step not in stored]

    def logged_before_kill(self, step: int) -> float:
        """Seconds between the step's logging and the kill."""
        return self.killed_at - self.logged[step]


class WorkerProcess:
    """This module run as a worker process, until `kill`."""

    def __init__(
        self, url: str, key: str, spool: Path, experiment_id: str, directory: Path, rate: float, *extra: str
    ) -> None:
        self.run_id = "run_" + uuid.uuid4().hex[:20]
        self.progress = directory / f"{self.run_id}.progress"
        arguments = [url, key, str(spool), self.run_id, experiment_id, str(self.progress), str(rate), *extra]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.client.killed_worker", *arguments], cwd=ROOT, stderr=subprocess.PIPE
        )

    def has_logged(self, steps: int = 1) -> bool:
        """Whether the worker has logged `steps` steps yet; raises if it exited."""
        if self.process.poll() is not None:
            assert self.process.stderr is not None
            raise RuntimeError(f"the worker exited: {self.process.stderr.read().decode()}")
        return len(logged_times(self.progress)) >= steps

    def kill(self) -> Killed:
        killed_at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return Killed(self.run_id, logged_times(self.progress), killed_at)


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("url", "key", "spool", "run_id", "experiment_id", "progress"):
        parser.add_argument(name)
    parser.add_argument("rate", type=float, help="steps per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="at most; it is killed before")
    parser.add_argument("--checkpoint", type=Path, help="a file to upload as a checkpoint after the first step")
    parser.add_argument("--keep-upload-records", action="store_true", help="as if killed before each one is removed")
    parser.add_argument("--spool-fsync", action="store_true")
    parser.add_argument("--no-write-ahead", action="store_true")
    args = parser.parse_args()

    from crucible_client import Client
    from crucible_client.upload_journal import UploadJournal

    if args.keep_upload_records:
        UploadJournal.forget = lambda self, checkpoint_id: None  # type: ignore[method-assign]
    progress = Progress(Path(args.progress), int(args.rate * args.seconds))
    client = Client(
        args.url,
        args.key,
        spool_dir=args.spool,
        max_backoff=0.5,
        write_ahead=not args.no_write_ahead,
        spool_fsync=args.spool_fsync,
    )
    run = client.start_run(args.experiment_id, {"rate": args.rate}, run_id=args.run_id)
    started = time.time()
    for step in range(progress.capacity):
        delay = started + step / args.rate - time.time()
        if delay > 0:
            time.sleep(delay)
        progress.logging(step)
        run.log_metrics(step, loss=1.0 / (step + 1))
        if args.checkpoint is not None and step == 0:
            run.checkpoint(args.checkpoint, epoch=1, val_loss=0.5)
    raise SystemExit("not killed in time")


if __name__ == "__main__":
    main()
