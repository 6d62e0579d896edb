"""Fixtures shared by every test package: an app on the embedded default per test, one tansu broker
per session, and `crucible` processes on a broker of a test's own."""

from __future__ import annotations

import asyncio
import gc
import io
import itertools
import os
import shutil
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
from service.warehouse.client import Warehouse
from service.warehouse.migrations import migrate
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


@pytest.fixture(scope="session")
def migrated_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded warehouse (chDB's directory) with every migration applied, made once.

    Applying the migrations to an empty chDB directory takes about 0.25 s, more than the
    rest of an app's start, and app_client starts some 800 apps: each copies this instead
    (under 0.1 s) and the app's start-up then finds every migration applied, as a restarted
    server does. What a fresh directory's migrations do is tested where it is the subject
    (tests/warehouse/test_sql_files.py, tests/cli/test_cli.py) and by every test that runs
    `crucible serve` as a process on a data dir of its own.
    """
    settings = make_settings(tmp_path_factory.mktemp("migrated") / "data")
    warehouse = Warehouse(settings)

    async def apply() -> None:
        await warehouse.start()
        try:
            await migrate(warehouse)
        finally:
            await warehouse.stop()

    asyncio.run(apply())
    return warehouse.chdb_path


# Each app's start-up collects the garbage of the whole process and then freezes what is
# left (service/app.py's _gc_context). In the test process that means every object the
# session has imported and made, torch and transformers included (tests/client): some
# 550,000, 0.2-0.4 s a collection, in each of some 800 app starts. So app_client first
# freezes what the process holds: the app's collection then scans what was made since, and
# the app still runs with its own objects frozen and its thresholds, as in production. The
# app unfreezes everything when it stops; every FULL_COLLECTION_EVERY starts, a whole
# collection frees what earlier tests left behind.
FULL_COLLECTION_EVERY = 50
_app_starts = itertools.count()


def _freeze_what_the_process_holds() -> None:
    if next(_app_starts) % FULL_COLLECTION_EVERY == 0:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


@pytest.fixture
async def app_client(aiohttp_client: Any, tmp_path: Path, migrated_warehouse: Path) -> AsyncIterator[AppClientFactory]:
    """Start the whole service in-process as an admin: `await app_client(**settings_changes)`.

    The client sends an unlimited admin key with every request; `client.secret` is it. The
    first start on the test's data dir begins from a copy of `migrated_warehouse` (embedded
    warehouse only); a later one (a restart) finds the warehouse it left.
    """

    async def start(**changes: Any) -> TestClient:
        settings = make_settings(tmp_path / "data", **changes)
        chdb_path = Warehouse(settings).chdb_path
        if settings.embedded_warehouse and not chdb_path.exists():
            # What the migrations leave in a fresh directory, copied (chDB's links inside are relative).
            shutil.copytree(migrated_warehouse, chdb_path, symlinks=True)
        secret = await admin_secret(settings)
        _freeze_what_the_process_holds()
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
