"""Telemetry log records as the events the API shows: what live channels push.

An event pushed live must equal the one `GET /api/v1/telemetry/events` returns once
the warehouse has it, so this builds the same `StoredEvent` from the record the
warehouse is fed: times in UTC, `received_at` of the batch, `data` as sent.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from schemas.telemetry import StoredEvent, TelemetryRecord
from service.log.interface import StoredRecord
from service.warehouse.writer import record_shape

_record_decoder = msgspec.json.Decoder(TelemetryRecord)


def stored_events(record: StoredRecord) -> list[StoredEvent]:
    """The events of one `crucible.telemetry` record, in their order in the batch.

    Only format v2 records: live channels read from the log's end, and this version of
    the service writes nothing else (format v1 records are in old logs only)."""
    legacy, _ = record_shape(record)
    if legacy:
        return []
    decoded = _record_decoder.decode(record.value)
    received_at = _utc(decoded.received_at)
    return [
        StoredEvent(
            id=event.id or "",  # ingest gives every event an id before it appends
            event_name=event.event_name,
            measurements=event.measurements,
            metadata=event.metadata,
            timestamp=_utc(event.timestamp or decoded.received_at),
            received_at=received_at,
            data=event.data,
        )
        for event in decoded.events
    ]


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
