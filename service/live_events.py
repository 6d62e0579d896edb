"""Telemetry log records as the events the API shows: what live channels push.

An event pushed live must equal the one `GET /api/v1/telemetry/events` returns once
the warehouse has it, so this builds the same `StoredEvent` from the record the
warehouse is fed: times in UTC, `received_at` of the batch, `data` as sent.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from schemas.telemetry import StoredEvent, TelemetryRecord, WarehouseRow
from service.log import StoredRecord
from service.writer import record_shape

_record_decoder = msgspec.json.Decoder(TelemetryRecord)
_row_decoder = msgspec.json.Decoder(WarehouseRow)
_data_decoder = msgspec.json.Decoder(dict[str, Any])


def stored_events(record: StoredRecord) -> list[StoredEvent]:
    """The events of one `crucible.telemetry` record, in their order in the batch."""
    legacy, _ = record_shape(record)
    if legacy:
        return [_from_row(_row_decoder.decode(line)) for line in record.value.splitlines() if line]
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


def _from_row(row: WarehouseRow) -> StoredEvent:
    """A format v1 record's line (written before v2), as the warehouse turns it into an event."""
    return StoredEvent(
        id=row.id,
        event_name=row.event_name.split("."),
        measurements=row.measurements,
        metadata=row.metadata,
        timestamp=_utc(row.timestamp),
        received_at=_utc(row.received_at),
        data=_data_decoder.decode(row.data) if row.data else None,
    )


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
