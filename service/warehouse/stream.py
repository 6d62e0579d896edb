"""A query's whole answer read from the warehouse piece by piece, for exports.

These are blocking generators, meant for a thread of their own (service/core/thread_stream.py);
each holds a connection of its own until it is closed. From a ClickHouse server, text
formats (CSV, JSONEachRow) come through clickhouse-connect's `raw_stream` and Arrow
through `query_arrow_stream`. From chDB they come through chDB's own streaming API,
`send_query`: clickhouse-connect would gather an Arrow answer into memory whole (chDB
makes each block a complete Arrow stream of its own), and for text its file-like
wrapper copies each block twice more (measured: ~15 % of a CSV export's CPU).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Generator, Iterator
from typing import Any, cast

import chdb
import pyarrow as pa
from clickhouse_connect.driver.binding import bind_query

from service.warehouse.client import Warehouse, WarehouseError

CHUNK_BYTES = 1 << 20
BATCH_ROWS = 131_072


def text_chunks(warehouse: Warehouse, sql: str, parameters: dict[str, Any], fmt: str) -> Generator[bytes, None, None]:
    """The output of `sql` in a text format `fmt` that concatenates (CSV, JSONEachRow), a block or ~1 MiB
    at a time. Settings go in the SQL (a SETTINGS clause), the same for both backends."""
    with _warehouse_errors():
        if warehouse.embedded:
            with _chdb_query(warehouse, sql, parameters, fmt) as blocks:
                for block in blocks:
                    yield block.bytes()
            return
        with warehouse.dedicated_client() as client:
            stream = cast(io.RawIOBase, client.raw_stream(sql, parameters=parameters, fmt=fmt))
            try:
                while chunk := stream.read(CHUNK_BYTES):
                    yield chunk
            finally:
                stream.close()


def arrow_batches(warehouse: Warehouse, sql: str, parameters: dict[str, Any]) -> Iterator[pa.RecordBatch]:
    """The rows of `sql` as Arrow record batches, with ClickHouse's own Arrow types."""
    with _warehouse_errors():
        if warehouse.embedded:
            with _chdb_query(warehouse, sql, parameters, "Arrow") as result:
                yield from result.record_batch(rows_per_batch=BATCH_ROWS)
            return
        with warehouse.dedicated_client() as client, client.query_arrow_stream(sql, parameters=parameters) as tables:
            for table in tables:
                yield from table.to_batches()


def arrow_schema(warehouse: Warehouse, sql: str, parameters: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of `sql`'s rows, asked with no rows (chDB streams nothing at all for an empty answer)."""
    with _warehouse_errors(), warehouse.dedicated_client() as client:
        body = client.raw_query(f"SELECT * FROM ({sql}) LIMIT 0", parameters=parameters, fmt="ArrowStream")
    return pa.ipc.open_stream(body).schema


@contextlib.contextmanager
def _chdb_query(warehouse: Warehouse, sql: str, parameters: dict[str, Any], fmt: str) -> Iterator[Any]:
    """chDB's streaming result of `sql` in `fmt`, on a handle of its own of the engine this
    process already runs (chDB allows many per path)."""
    # The same server-side parameters clickhouse-connect sends, without its `param_` prefix.
    bound, values = bind_query(sql, parameters)
    params = {name.removeprefix("param_"): value for name, value in values.items()}
    connection = chdb.connect(str(warehouse.chdb_path.resolve()))
    try:
        result = connection.send_query(bound if isinstance(bound, str) else bound.decode(), fmt, params=params)
        try:
            yield result
        finally:
            result.close()
    finally:
        connection.close()


@contextlib.contextmanager
def _warehouse_errors() -> Iterator[None]:
    """Whatever the client or chDB raise, as the WarehouseError handlers turn into 503."""
    try:
        yield
    except WarehouseError:
        raise
    except Exception as exc:
        raise WarehouseError(str(exc)) from exc
