"""An experiment as one file (API.md "Export Experiment"): a JSON document or a zip of CSVs.

Both are canonical, so the same data exported twice is the same bytes: JSON with
sorted keys, no spaces and msgspec's shortest round-trip floats; telemetry in the
table's order (experiment, time, id, log position); zip entries in a fixed order
with fixed times and attributes. Each says which log positions it reflects: the
offset after the experiment's last event in `crucible.resources`, and per partition
of `crucible.telemetry` the offset after the last record of it the warehouse held
(the events exported are bounded by them, so the two always agree).

The JSON document is `{"content": {...}, "sha256": "<hex>"}`, where sha256 is the
SHA-256 of the bytes of `content` exactly as sent; it comes last, so the document
streams however much telemetry it holds. A zip holds `manifest.json` of the same
shape, whose content lists each file's SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from service.exports.formats import CSV, EVENT_ROWS, Chunks, EventsExport, Pieces, csv_line, file_chunks
from service.exports.query import DEFAULT_FIELDS
from service.warehouse.client import Warehouse
from service.warehouse.event_rows import EventRow, stored_event

T = TypeVar("T")

FORMAT_VERSION = 1
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
RUN_COLUMNS = ("id", "status", "progress")

_canonical = msgspec.json.Encoder(order="sorted").encode


_decode_row = msgspec.json.Decoder(EventRow).decode


@dataclass(frozen=True, slots=True)
class ExperimentExport:
    """What goes in, taken from the state on the event loop before the file is made on a thread.

    `parts` are the included parts the state gives (config, results, runs) as JSON-ready
    values; `telemetry` is set when telemetry is included.
    """

    experiment_id: str
    include: tuple[str, ...]
    experiment: dict[str, Any]
    parts: dict[str, Any]
    positions: dict[str, Any]
    telemetry: EventsExport | None


def events_export(experiment_id: str, positions: list[dict[str, int]], csv: bool) -> EventsExport:
    """The experiment's events below `positions`: as CSV for a zip, else as the warehouse's
    rows, made canonical here."""
    parameters = {
        "experiment_id": experiment_id,
        "partitions": [p["partition"] for p in positions],
        "ends": [p["next_offset"] for p in positions],
    }
    return EventsExport(CSV if csv else EVENT_ROWS, DEFAULT_FIELDS, parameters, source="experiment_telemetry")


def _content(export: ExperimentExport, **more: Any) -> dict[str, Any]:
    return {
        "experiment_id": export.experiment_id,
        "format_version": FORMAT_VERSION,
        "include": list(export.include),
        "positions": export.positions,
        **more,
    }


def signed(content: bytes) -> bytes:
    """The document `{"content": ..., "sha256": ...}` around canonical `content` bytes."""
    return b'{"content":' + content + b',"sha256":"' + hashlib.sha256(content).hexdigest().encode() + b'"}'


def json_document(warehouse: Warehouse, export: ExperimentExport) -> Chunks:
    """The JSON document, piece by piece (blocking: run it on a thread of its own)."""
    head = _canonical(_content(export, experiment=export.experiment, **export.parts))
    if export.telemetry is None:
        yield signed(head)
        return
    # "telemetry" sorts after every other key, so the events come last and stream.
    digest = hashlib.sha256()
    with contextlib.closing(_event_batches(warehouse, export.telemetry)) as batches:
        first = next(batches, None)  # the warehouse answers before anything is sent
        opening = head[:-1] + b',"telemetry":['
        digest.update(opening)
        yield b'{"content":' + opening
        separator = b""
        for lines in _chain(first, batches):
            piece = separator + b",".join(_canonical(stored_event(_decode_row(line))) for line in lines)
            separator = b","
            digest.update(piece)
            yield piece
    closing = b"]}"
    digest.update(closing)
    yield closing + b',"sha256":"' + digest.hexdigest().encode() + b'"}'


def _chain(first: T | None, rest: Iterator[T]) -> Iterator[T]:
    """`first` (taken early, to fail early) and the rest, or nothing when there was no first."""
    if first is not None:
        yield first
        yield from rest


def _event_batches(warehouse: Warehouse, telemetry: EventsExport) -> Generator[list[bytes], None, None]:
    """The events' JSON lines, whole lines whatever the chunks' edges, a chunk's worth at a time."""
    rest = b""
    with contextlib.closing(file_chunks(warehouse, telemetry)) as chunks:
        for chunk in chunks:
            *lines, rest = (rest + chunk).split(b"\n")
            if lines := [line for line in lines if line]:
                yield lines
    if rest:
        yield [rest]


def zip_archive(warehouse: Warehouse, export: ExperimentExport) -> Chunks:
    """The zip, piece by piece (blocking: run it on a thread of its own)."""
    sink = Pieces()
    digests: dict[str, str] = {}
    with contextlib.ExitStack() as resources:
        telemetry = None
        if export.telemetry is not None:
            telemetry = resources.enter_context(contextlib.closing(file_chunks(warehouse, export.telemetry)))
            first = next(telemetry, None)  # the warehouse answers before anything is sent
        archive = resources.enter_context(zipfile.ZipFile(sink, "w"))
        for name, data in _csv_files(export):
            with archive.open(_entry(name), "w") as entry:
                entry.write(data)
            digests[name] = hashlib.sha256(data).hexdigest()
        yield sink.take()
        if telemetry is not None:
            digest = hashlib.sha256()
            with archive.open(_entry("telemetry.csv"), "w", force_zip64=True) as entry:
                for chunk in _chain(first, telemetry):
                    entry.write(chunk)
                    digest.update(chunk)
                    yield sink.take()
            digests["telemetry.csv"] = digest.hexdigest()
        with archive.open(_entry("manifest.json"), "w") as entry:
            entry.write(signed(_canonical(_content(export, files=digests))))
        archive.close()
    yield sink.take()


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry whose header depends on nothing but its name."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # Unix, whatever the system writing it
    info.external_attr = 0o644 << 16
    return info


def _csv_files(export: ExperimentExport) -> Iterator[tuple[str, bytes]]:
    """The small files: the experiment, and the included parts the state holds."""
    experiment = export.experiment
    yield "experiment.csv", csv_line(list(experiment)) + csv_line([_cell(v) for v in experiment.values()])
    if "config" in export.parts:
        config = export.parts["config"]
        rows = [csv_line([key, _cell(config[key], always_json=True)]) for key in sorted(config)]
        yield "config.csv", csv_line(["key", "value"]) + b"".join(rows)
    if "results" in export.parts:
        results = export.parts["results"]
        columns = sorted(results)
        yield "results.csv", csv_line(columns) + csv_line([_cell(results[c]) for c in columns])
    if "runs" in export.parts:
        runs = export.parts["runs"]
        columns = sorted({key for run in runs for key in run}) or list(RUN_COLUMNS)
        lines = [csv_line([_cell(run.get(c)) for c in columns]) for run in runs]
        yield "runs.csv", csv_line(columns) + b"".join(lines)


def _cell(value: Any, always_json: bool = False) -> str:
    """A value in a CSV cell: text as it is, null empty, anything else canonical JSON."""
    if value is None:
        return ""
    if isinstance(value, str) and not always_json:
        return value
    return _canonical(value).decode()
