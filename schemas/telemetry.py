"""Telemetry events: what producers send, what the log carries and what queries return.

The ingest types are the validation contract of `POST /api/v1/telemetry/events`.
`TelemetryRecord` is the value of a `crucible.telemetry` log record (format v2): the
validated events as decoded, in the shape of the warehouse's `telemetry_records`
table, so the writer only prefixes each record's log position. `WarehouseRow` is
format v1 (one JSON line per event), still read from logs written before v2.
Schema evolution: new fields get defaults, existing types never change.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

# Names are stored dot-joined, so a segment may not contain a dot. That is checked
# after decoding (service/ingest/ingestor.py): a regex here would double the cost of validation.
NameSegment = Annotated[str, Meta(min_length=1, max_length=64)]
EventName = Annotated[list[NameSegment], Meta(min_length=1, max_length=16)]
MeasurementKey = Annotated[str, Meta(min_length=1, max_length=128)]
# JSON has no NaN or Infinity literal, but 1e999 decodes to inf: the bounds reject it.
FiniteFloat = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
MetadataKey = Annotated[str, Meta(min_length=1, max_length=128)]
MetadataValue = Annotated[str, Meta(max_length=4096)]
ClientEventId = Annotated[str, Meta(min_length=1, max_length=128)]

MAX_MEASUREMENTS = 256
MAX_METADATA = 256


class TelemetryEvent(msgspec.Struct, kw_only=True, gc=False):
    """One event as a producer sends it."""

    event_name: EventName
    measurements: Annotated[dict[MeasurementKey, FiniteFloat], Meta(max_length=MAX_MEASUREMENTS)] = {}
    metadata: Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=MAX_METADATA)] = {}
    timestamp: dt.datetime | None = None
    id: ClientEventId | None = None
    data: dict[str, Any] | None = None


# gc=False: decoded JSON cannot form reference cycles, so these never need the cycle collector.
class IngestBatch(msgspec.Struct, kw_only=True, gc=False):
    """The whole body, validated in one call: the fast path when every event is valid."""

    events: list[TelemetryEvent]


class RawIngestBatch(msgspec.Struct, kw_only=True):
    """The body with events left undecoded, so each one can be validated on its own."""

    events: list[msgspec.Raw]


class IngestError(msgspec.Struct, kw_only=True):
    index: int
    message: str
    path: str


class IngestResult(msgspec.Struct, kw_only=True):
    accepted: int
    rejected: int
    errors: list[IngestError]


class IngestResponse(msgspec.Struct, kw_only=True):
    data: IngestResult


# The content-type header of a log record says which format its value has.
RECORD_CONTENT_TYPE = b"application/json; record=crucible.telemetry.v2"
LEGACY_CONTENT_TYPE = b"application/x-ndjson; row=crucible.telemetry.v1"
# Header holding how many events a v2 record carries (v1: one per line).
RECORD_EVENTS_HEADER = "events"
# Header holding the batch id of a batch sent with an Idempotency-Key (absent otherwise):
# every attempt of that batch carries the same one, so the writer can drop a retry
# without decoding the value (service/warehouse/retry_window.py).
RECORD_BATCH_HEADER = "batch-id"


class TelemetryRecord(msgspec.Struct, kw_only=True, gc=False):
    """A log record's value (format v2): one batch's valid events for one experiment.

    Events keep the shape they were decoded in, with `id` and `timestamp` filled in;
    the warehouse joins `event_name` and reads the promoted columns from `metadata`
    (migration 0004), so ingest does no per-event reshaping.
    """

    received_at: dt.datetime
    batch_id: str
    events: list[TelemetryEvent]


class WarehouseRow(msgspec.Struct, kw_only=True, gc=False):
    """One event in the warehouse's row shape: a format v1 record is these as JSON lines.

    `log_partition`/`log_offset` are not here: the writer appends them to each
    line, since the position is only known once the record is in the log.
    """

    id: str
    event_name: str
    experiment_id: str
    run_id: str
    model: str
    timestamp: dt.datetime
    received_at: dt.datetime
    measurements: dict[str, float]
    metadata: dict[str, str]
    data: str
    batch_id: str


class StoredEvent(msgspec.Struct, kw_only=True):
    """An event as `GET /telemetry/events` and live channels return it."""

    id: str
    event_name: list[str]
    measurements: dict[str, float]
    metadata: dict[str, str]
    timestamp: dt.datetime
    received_at: dt.datetime
    data: dict[str, Any] | None = None


AggFunction = Literal["count", "avg", "sum", "min", "max", "p50", "p95", "p99"]


class AggregatePoint(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One point of an aggregate series; `count` is how many values it used.

    `timestamp` is where the point starts: the start of its interval, or without an
    interval the `after` filter, else the time of the first event it used."""

    timestamp: dt.datetime
    value: float | None
    count: int
    group: str | None = None
