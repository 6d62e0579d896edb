"""Fixtures: an app on the embedded default per test, and one tansu broker per session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.settings import Settings
from tests.support import tansu_broker

KAFKA_ENV = "CRUCIBLE_TEST_KAFKA"


def make_settings(data_dir: Path, **changes: Any) -> Settings:
    """Test settings: the embedded default in `data_dir`, a short writer flush."""
    base = Settings(data_dir=str(data_dir), writer_flush_seconds=0.05, query_threads=2)
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


@pytest.fixture
async def app_client(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[AppClientFactory]:
    """Start the whole service in-process: `await app_client(**settings_changes)`."""

    async def start(**changes: Any) -> TestClient:
        return await aiohttp_client(create_app(make_settings(tmp_path / "data", **changes)))

    yield start


@pytest.fixture
async def client(app_client: AppClientFactory) -> TestClient:
    return await app_client()
