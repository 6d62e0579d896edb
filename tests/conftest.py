"""Fixtures shared by every test package: an app on the embedded default per test, one tansu broker
per session, and `crucible` processes on a broker of a test's own."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestClient

from schemas.resources import RateLimits
from service.app import create_app
from service.cli.log_commands import keys_create
from service.settings import Settings
from tests.support import ClickHouseEndpoint, Http, ServerProcess, create_admin_key, free_port, tansu_broker

KAFKA_ENV = "CRUCIBLE_TEST_KAFKA"


def make_settings(data_dir: Path, **changes: Any) -> Settings:
    """Test settings: the embedded default in `data_dir`, a short writer flush, and batches
    decoded on the event loop (tests/ingest/test_ingest_workers.py covers the worker processes)."""
    base = Settings(data_dir=str(data_dir), writer_flush_seconds=0.05, query_threads=2, ingest_workers=0)
    return msgspec.structs.replace(base, **changes)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The tansu broker .ci/run started (CRUCIBLE_TEST_KAFKA), or one of our own."""
    if os.environ.get(KAFKA_ENV):
        yield os.environ[KAFKA_ENV]
        return
    with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


AppClientFactory = Callable[..., Any]


# The tests' admin key may do anything as often as it likes; rate limits are tested with keys of their own.
UNLIMITED = RateLimits(read=10**9, write=10**9, ingest=10**12, export=10**9)


async def admin_secret(settings: Settings) -> str:
    """The secret of an unlimited admin key in the settings' log, created on first use."""
    path = settings.data_path / "test-admin.key"
    if path.exists():
        return path.read_text()
    secret = await keys_create(settings, "test admin", ["admin"], UNLIMITED, out=io.StringIO())
    path.write_text(secret)
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def app_client(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[AppClientFactory]:
    """Start the whole service in-process as an admin: `await app_client(**settings_changes)`.

    The client sends an unlimited admin key with every request; `client.secret` is it.
    """

    async def start(**changes: Any) -> TestClient:
        settings = make_settings(tmp_path / "data", **changes)
        secret = await admin_secret(settings)
        client = await aiohttp_client(create_app(settings), headers=bearer(secret))
        client.secret = secret
        return client

    yield start


@pytest.fixture
async def client(app_client: AppClientFactory) -> TestClient:
    return await app_client()


# -- `crucible` processes on a tansu broker (tests/log/test_kafka.py, tests/ingest/test_kafka_idempotency.py)


@pytest.fixture
def own_broker() -> Iterator[str]:
    """A tansu broker for this test alone: empty topics, a fresh warehouse group."""
    with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def servers(tmp_path: Path, http: Http) -> Iterator[Any]:
    """Start `crucible ...` children; whatever is still running at the end is stopped.

    Before the first one, an admin key is created on its broker and `http` sends it.
    """
    started: list[ServerProcess] = []

    def start(name: str, args: list[str], wait_ready: bool = True, env: dict[str, str] | None = None) -> ServerProcess:
        if not http.headers:  # the key's command creates the topics: with the server's partitions
            log_args = [
                args[args.index(flag) + offset] for flag in ("--kafka", "--kafka-partitions") for offset in (0, 1)
            ]
            secret = create_admin_key([*log_args, "--no-kafka-idempotence"])
            http.headers = {"Authorization": f"Bearer {secret}"}
        server = ServerProcess(args, free_port(), env=env, log=tmp_path / f"{name}.log")
        started.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in started:
        server.kill()
    for server in started:  # shown by pytest when the test failed
        if server.log is not None and server.log.exists():
            print(f"--- {server.log.name} ---\n{server.log.read_text()[-4000:]}")


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Http(session)


@pytest.fixture
def clickhouse_endpoint(tmp_path: Path) -> Iterator[ClickHouseEndpoint]:
    """A ClickHouse HTTP endpoint backed by chDB (tests/clickhouse_endpoint.py), for this test."""
    endpoint = ClickHouseEndpoint(tmp_path / "clickhouse").start()
    yield endpoint
    endpoint.kill()
