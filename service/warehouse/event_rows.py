"""Telemetry events as the warehouse returns them, made into the events the API shows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from schemas.telemetry import StoredEvent


class EventRow(msgspec.Struct):
    """An event as the warehouse returns it in JSON lines (event_name dot-joined, data as JSON text)."""

    id: str
    event_name: str
    measurements: dict[str, float]
    metadata: dict[str, str]
    timestamp: dt.datetime
    received_at: dt.datetime
    data: str


_decode_data = msgspec.json.Decoder(dict[str, Any])


def stored_event(row: EventRow) -> StoredEvent:
    return StoredEvent(
        id=row.id,
        event_name=row.event_name.split("."),
        measurements=row.measurements,
        metadata=row.metadata,
        timestamp=row.timestamp,
        received_at=row.received_at,
        data=_decode_data.decode(row.data) if row.data else None,
    )
