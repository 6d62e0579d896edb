"""The chDB-backed ClickHouse HTTP endpoint (tests/clickhouse_endpoint.py) through
clickhouse-connect's HTTP client, then the service's own warehouse through it: the
`--clickhouse http://...` path of every API process in the distributed deployment."""

from __future__ import annotations

import datetime as dt
import gzip
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

import queries
from service.settings import Settings
from service.warehouse.client import Warehouse
from service.warehouse.migrations import applied_versions, migrate
from tests.support import ClickHouseEndpoint
from tests.warehouse.test_sql_files import PARAMETERS

TABLE = """
CREATE TABLE rows (
    id UInt64, name String, kind LowCardinality(String), values Map(String, Float64),
    at DateTime64(6, 'UTC')
) ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 100
"""


@pytest.fixture
def client(clickhouse_endpoint: ClickHouseEndpoint) -> Iterator[Client]:
    client = clickhouse_connect.get_client(
        interface="http", host="127.0.0.1", port=clickhouse_endpoint.port, autogenerate_session_id=False
    )
    yield client
    client.close()


def rows(count: int, start: int = 0) -> list[list[Any]]:
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return [
        [i, f"name {i} 'quoted'\n", ["a", "b"][i % 2], {"loss": i / 3}, base + dt.timedelta(microseconds=i)]
        for i in range(start, start + count)
    ]


def test_commands_and_bound_parameters_run_in_chdb(client: Client) -> None:
    assert client.command("SELECT 1 + 1") == 2
    result = client.query(
        "SELECT {a:Nullable(String)} IS NULL, {b:Array(String)}, {c:DateTime64(6)}, {d:String}",
        parameters={"a": None, "b": ["x", "y'z"], "c": "2024-01-01 00:00:00.000001", "d": "tab\tand 'quote'"},
    )
    assert result.result_rows == [(True, ["x", "y'z"], dt.datetime(2024, 1, 1, 0, 0, 0, 1), "tab\tand 'quote'")]


@pytest.mark.parametrize("compression", [None, "lz4", "zstd", "gzip"])
def test_inserts_read_back_equal(clickhouse_endpoint: ClickHouseEndpoint, compression: str | None) -> None:
    client = clickhouse_connect.get_client(
        interface="http", host="127.0.0.1", port=clickhouse_endpoint.port, compress=compression or False
    )
    try:
        client.command(TABLE)
        sent = rows(5000)
        client.insert("rows", sent, column_names=["id", "name", "kind", "values", "at"])
        back = client.query("SELECT id, name, kind, values, at FROM rows ORDER BY id").result_rows
        assert [list(r[:4]) for r in back] == [r[:4] for r in sent]
        assert [r[4].replace(tzinfo=dt.UTC) for r in back] == [r[4] for r in sent]
    finally:
        client.close()


@pytest.mark.parametrize("encoding", ["lz4", "zstd", "gzip"])
def test_a_body_of_several_compressed_frames_is_inserted_whole(
    client: Client, clickhouse_endpoint: ClickHouseEndpoint, encoding: str
) -> None:
    """Clients compress a large insert piece by piece: every frame counts, not the first alone
    (taking the first lost the tail of large batches, only under load, when batches grow)."""
    client.command(TABLE)
    pieces = [
        b"".join(
            b'{"id":%d,"name":"n","kind":"a","values":{},"at":"2024-01-01 00:00:00"}\n' % i for i in range(k, k + 100)
        )
        for k in (0, 100, 200)
    ]
    if encoding == "lz4":
        import lz4.frame

        body = b"".join(lz4.frame.compress(piece) for piece in pieces)
    elif encoding == "zstd":
        from backports import zstd

        body = b"".join(zstd.compress(piece) for piece in pieces)
    else:
        body = b"".join(gzip.compress(piece) for piece in pieces)
    query = urllib.parse.urlencode({"query": "INSERT INTO rows FORMAT JSONEachRow"})
    request = urllib.request.Request(
        f"{clickhouse_endpoint.url}/?{query}", data=body, headers={"Content-Encoding": encoding}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
    assert client.command("SELECT count() FROM rows") == 300


def test_a_repeated_insert_with_its_deduplication_token_stores_nothing(client: Client) -> None:
    client.command(TABLE)
    body = b"".join(b'{"id":%d,"name":"n","kind":"a","values":{},"at":"2024-01-01 00:00:00"}\n' % i for i in range(10))
    for _ in range(3):
        client.raw_insert("rows", insert_block=body, fmt="JSONEachRow", settings={"insert_deduplication_token": "t1"})
    client.raw_insert("rows", insert_block=body, fmt="JSONEachRow", settings={"insert_deduplication_token": "t2"})
    assert client.command("SELECT count() FROM rows") == 20
    # The setting held for its insert only.
    assert client.command("SELECT value FROM system.settings WHERE name = 'insert_deduplication_token'") == ""


def test_each_request_runs_with_its_own_settings_only(client: Client) -> None:
    def max_threads(**settings: Any) -> int:
        return int(client.command("SELECT getSetting('max_threads')", settings=settings))

    default = max_threads()
    assert max_threads(max_threads=3) == 3
    assert max_threads(max_threads=3) == 3  # the same again: kept, not set twice
    assert max_threads(max_threads=5) == 5
    assert max_threads() == default


def test_an_unknown_setting_is_refused_as_clickhouse_refuses_it(clickhouse_endpoint: ClickHouseEndpoint) -> None:
    query = urllib.parse.urlencode({"query": "SELECT 1", "no_such_setting_here": "1"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{clickhouse_endpoint.url}/?{query}", timeout=30)
    assert refused.value.code == 400
    assert refused.value.headers["X-ClickHouse-Exception-Code"] == "115"
    assert b"no_such_setting_here" in refused.value.read()


@pytest.mark.parametrize("fmt", ["JSONEachRow", "CSV", "TabSeparated", "Parquet", "ArrowStream"])
def test_every_output_format_is_chdbs_own(client: Client, fmt: str) -> None:
    body = client.raw_query("SELECT number AS n, toString(number) AS s FROM numbers(3)", fmt=fmt)
    if fmt in ("JSONEachRow", "CSV", "TabSeparated"):
        assert body.count(b"\n") == 3 and b"2" in body.splitlines()[2]
    else:  # binary: read back by the library that reads it
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(pa.BufferReader(body)) if fmt == "Parquet" else pa.ipc.open_stream(body).read_all()
        assert table.column("n").to_pylist() == [0, 1, 2]


def test_an_error_carries_clickhouses_code_and_message(client: Client) -> None:
    with pytest.raises(DatabaseError) as raised:
        client.query("SELECT * FROM no_such_table")
    assert "UNKNOWN_TABLE" in str(raised.value) and "60" in str(raised.value)
    with pytest.raises(DatabaseError, match="Syntax error"):
        client.command("SELEC 1")


def test_a_large_answer_streams_in_blocks(client: Client) -> None:
    total = 0
    with client.query_row_block_stream("SELECT number FROM numbers(1000000)") as stream:
        for block in stream:
            total += len(block)
    assert total == 1_000_000


async def test_the_service_warehouse_migrates_and_runs_every_query_over_http(
    clickhouse_endpoint: ClickHouseEndpoint, tmp_path: Any
) -> None:
    warehouse = Warehouse(Settings(data_dir=str(tmp_path / "data"), clickhouse=clickhouse_endpoint.url))
    await warehouse.start()
    try:
        await migrate(warehouse)
        assert await applied_versions(warehouse) == {n for n, _, _ in queries.migrations()}
        assert await migrate(warehouse) == []
        for name, parameters in PARAMETERS.items():
            assert isinstance(await warehouse.query(name, parameters), bytes), name
    finally:
        await warehouse.stop()
