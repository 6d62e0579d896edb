"""Export files: CSV, JSON lines and Parquet, made from the warehouse's stream block by block.

ClickHouse writes CSV and JSON lines itself (`CSV`, `JSONEachRow` output formats); this
module only adds the CSV header line. Parquet is written by pyarrow from ClickHouse's
Arrow batches, one row group at a time, so timestamps stay timestamps and measurements
numbers. `file_chunks` gives the bytes of a whole file as a blocking generator, for a
thread of its own: an HTTP answer streams them, a job writes them to disk.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from service.exports.query import ExportField, QueryShape, export_sql
from service.warehouse.client import Warehouse
from service.warehouse.stream import BATCH_ROWS, arrow_batches, arrow_schema, text_chunks

RowCounter = Callable[[int], None]
Chunks = Generator[bytes, None, None]  # a file's bytes, piece by piece; close() lets go of the warehouse


@dataclass(frozen=True, slots=True)
class FileFormat:
    name: str
    extension: str
    content_type: str
    clickhouse_format: str
    shape: QueryShape


# A map as a JSON object, written entry by entry: the same text as toJSONString(map)
# (checked on 10M rows) for ~30 % less of the export's CPU.
_JSON_OBJECT = (
    "concat('{{', arrayStringConcat(arrayMap((k, v) -> concat(toJSONString(k), ':', toJSONString(v)),"
    " mapKeys(e.{0}), mapValues(e.{0})), ','), '}}')"
)
CSV = FileFormat(
    "csv",
    "csv",
    "text/csv; charset=utf-8",
    "CSV",
    # Maps as JSON objects in one cell; a missing map entry is an empty cell, an empty value "".
    QueryShape(
        {name: _JSON_OBJECT.format(name) for name in ("measurements", "metadata")},
        "date_time_output_format = 'iso', format_csv_null_representation = ''",
    ),
)
JSON_LINES = FileFormat(
    "jsonl",
    "jsonl",
    "application/x-ndjson",
    "JSONEachRow",
    # event_name as the list of segments it was sent as; `data` stays the JSON text it was stored as.
    QueryShape({"event_name": "splitByChar('.', e.event_name)"}, "date_time_output_format = 'iso'"),
)
# The rows as the warehouse holds them, for code that reads them back (an experiment export).
EVENT_ROWS = FileFormat(
    "rows", "jsonl", "application/x-ndjson", "JSONEachRow", QueryShape({}, "date_time_output_format = 'iso'")
)
PARQUET = FileFormat("parquet", "parquet", "application/vnd.apache.parquet", "Arrow", QueryShape({}, ""))
FORMATS = {f.name: f for f in (CSV, JSON_LINES, PARQUET)}


@dataclass(frozen=True, slots=True)
class EventsExport:
    """What to export: the format, the fields, and the query file finding the events with its parameters."""

    format: FileFormat
    fields: tuple[ExportField, ...]
    parameters: dict[str, Any]
    source: str = "telemetry_export"


def file_chunks(warehouse: Warehouse, export: EventsExport, counted: RowCounter | None = None) -> Chunks:
    """The bytes of the export's file, piece by piece; `counted(n)` hears of rows as they are written.

    Blocking: run it on a thread of its own. The first piece comes once the warehouse
    has answered, so a failing query fails before anything is sent.
    """
    sql, field_parameters = export_sql(export.fields, export.format.shape, export.source)
    parameters = {**export.parameters, **field_parameters}
    if export.format is PARQUET:
        yield from _parquet(warehouse, sql, parameters, counted)
        return
    with contextlib.closing(text_chunks(warehouse, sql, parameters, export.format.clickhouse_format)) as chunks:
        first = next(chunks, b"")  # asked before anything is sent, so a failing query answers 503
        header = csv_line([field.name for field in export.fields]) if export.format is CSV else b""
        count = CsvRecords() if export.format is CSV else _line_count
        for chunk in itertools.chain((first,), chunks):
            if counted is not None:
                counted(count(chunk))
            yield header + chunk if header else chunk
            header = b""


def csv_line(values: Sequence[Any]) -> bytes:
    """One CSV record quoted as ClickHouse quotes strings."""
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(values)
    return out.getvalue().encode()


def _line_count(chunk: bytes) -> int:
    return chunk.count(b"\n")  # JSON lines escape line breaks: one per row


class CsvRecords:
    """Counts CSV records: line ends outside quoted fields (a quoted field may hold a line break).

    ClickHouse doubles a quote inside a field, so a line end is inside a field exactly
    when an odd number of quotes came before it.
    """

    def __init__(self) -> None:
        self._inside = False

    def __call__(self, chunk: bytes) -> int:
        records = 0
        inside = self._inside
        *ended, rest = chunk.split(b"\n")
        for line in ended:
            inside ^= line.count(b'"') % 2 == 1
            if not inside:
                records += 1
        inside ^= rest.count(b'"') % 2 == 1
        self._inside = inside
        return records


def _parquet(warehouse: Warehouse, sql: str, parameters: dict[str, Any], counted: RowCounter | None) -> Chunks:
    """Parquet (zstd), a row group per ~BATCH_ROWS rows, each piece sent once its row group is written."""
    sink = Pieces()
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    try:
        for batch in arrow_batches(warehouse, sql, parameters):
            if writer is None:
                schema = batch.schema
                writer = pq.ParquetWriter(sink, schema, compression="zstd")
            pending.append(batch if batch.schema == schema else batch.cast(schema))
            pending_rows += batch.num_rows
            if pending_rows >= BATCH_ROWS:
                writer.write_table(pa.Table.from_batches(pending))
                if counted is not None:
                    counted(pending_rows)
                pending, pending_rows = [], 0
                yield sink.take()
        if writer is None:  # no rows: the schema alone
            writer = pq.ParquetWriter(sink, arrow_schema(warehouse, sql, parameters), compression="zstd")
        if pending:
            writer.write_table(pa.Table.from_batches(pending))
            if counted is not None:
                counted(pending_rows)
    finally:
        if writer is not None:
            writer.close()
    yield sink.take()


class Pieces:
    """A write-only file that keeps what was written until `take`."""

    closed = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        taken = b"".join(self._parts)
        self._parts.clear()
        return taken
