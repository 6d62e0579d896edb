"""What travels: queued events become encoded ingest batches with ids, timestamps and a key.

The training loop only appends a `Queued` tuple (no id, no encoding, a float clock);
everything that costs more than an append happens here, on the client's own thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import uuid
from typing import Any

import msgspec

from schemas.telemetry import IngestBatch, TelemetryEvent

logger = logging.getLogger("crucible_client")

EventName = str | list[str] | tuple[str, ...]


# One event as the hot path leaves it: (event_name, measurements, metadata, data, time.time()).
# A plain tuple, the cheapest thing to build; completed and encoded later, off the caller's thread.
Queued = tuple[EventName, dict[str, Any], dict[str, str], dict[str, Any] | None, float]


class Batch(msgspec.Struct, kw_only=True, gc=False):
    """An encoded ingest body and the Idempotency-Key every attempt to send it carries.

    `seq` orders this process's batches (flush waits on it); a batch a previous process
    left in the spool has its own process's seq, which this one ignores.
    """

    key: str
    seq: int
    events: int
    body: bytes
    origin: str = ""  # the process (spool directory) that made it; seq only means something there


_BODY_START = b'{"events":['
_BODY_END = b"]}"


def _to_builtin(value: Any) -> Any:
    """numpy and torch scalars and arrays, and other number-likes, as JSON can hold them."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "__float__"):
        return float(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__} in telemetry")


_encoder = msgspec.json.Encoder(enc_hook=_to_builtin)


class _NamedEvent(msgspec.Struct):
    event_name: Any = None


class _NamedBatch(msgspec.Struct):
    events: list[_NamedEvent]


_names_decoder = msgspec.json.Decoder(_NamedBatch)


def event_ids(count: int) -> list[str]:
    """`count` random UUIDs (version 4), from one read of the system's random source."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # RFC 4122 variant
    h = raw.hex()
    return [f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
            for i in range(0, 32 * count, 32)]  # fmt: skip


def new_key() -> str:
    return uuid.uuid4().hex


def _split_name(name: EventName) -> list[str]:
    return name.split(".") if isinstance(name, str) else list(name)


def _finite(measurements: dict[str, Any]) -> dict[str, Any]:
    """The measurements without NaN or infinities, which JSON cannot carry (a diverged loss):
    the server would refuse the whole event, so only the value is left out."""
    try:
        if all(map(math.isfinite, measurements.values())):
            return measurements
    except TypeError:  # not a number: the server will say which one
        return measurements
    left_out = [k for k, v in measurements.items() if not math.isfinite(v)]
    logger.warning("measurements %s are not finite numbers and were left out of the event", left_out)
    return {k: v for k, v in measurements.items() if k not in left_out}


class Clock:
    """Makes a process's event times strictly increasing, so the server orders its events
    (log lines, a metric's latest value) as they were logged: two calls within one
    microsecond would otherwise share a timestamp. A time more than a millisecond before
    the last one is kept as given: it was taken earlier on purpose (a checkpoint's)."""

    def __init__(self) -> None:
        self._last = 0  # microseconds since 1970

    def microseconds(self, seconds: float) -> int:
        now = round(seconds * 1_000_000)
        if self._last - 1000 < now <= self._last:
            now = self._last + 1
        self._last = max(self._last, now)
        return now


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_events(items: list[Queued], clock: Clock) -> list[TelemetryEvent]:
    """The queued events in the ingest schema, each with a new id and its UTC timestamp."""
    epoch, microsecond = _EPOCH, dt.timedelta(microseconds=1)
    names: dict[Any, list[str]] = {}  # most events share a few names: split each once
    events = []
    for event_id, (name, measurements, metadata, data, timestamp) in zip(event_ids(len(items)), items, strict=True):
        key = name if isinstance(name, str) else tuple(name)
        segments = names.get(key)
        if segments is None:
            segments = names[key] = _split_name(name)
        events.append(
            TelemetryEvent(
                event_name=segments,
                measurements=_finite(measurements),
                metadata=metadata,
                timestamp=epoch + clock.microseconds(timestamp) * microsecond,
                id=event_id,
                data=data,
            )
        )
    return events


def encode_event(
    name: EventName, measurements: dict[str, Any], metadata: dict[str, str], timestamp: float, event_id: str
) -> bytes:
    """One event as a whole ingest body, with the id and time given (a checkpoint's event,
    encoded before its upload starts). Raises TypeError or NotImplementedError when a
    value cannot be encoded."""
    event = TelemetryEvent(
        event_name=_split_name(name),
        measurements=_finite(measurements),
        metadata=metadata,
        timestamp=_EPOCH + round(timestamp * 1_000_000) * dt.timedelta(microseconds=1),
        id=event_id,
    )
    return _encoder.encode(IngestBatch(events=[event]))


def encode_batches(events: list[TelemetryEvent], max_bytes: int, first_seq: int, origin: str) -> list[Batch]:
    """The events as ingest bodies of at most `max_bytes` (unless one event alone is larger).

    An event that cannot be encoded (an object JSON cannot hold) is logged and left out,
    rather than failing the events around it.
    """
    bodies: list[tuple[int, bytes]] = []
    _encode_into(bodies, events, max_bytes)
    return [
        Batch(key=new_key(), seq=first_seq + n, events=count, body=body, origin=origin)
        for n, (count, body) in enumerate(bodies)
    ]


def _encode_into(bodies: list[tuple[int, bytes]], events: list[TelemetryEvent], max_bytes: int) -> None:
    if not events:
        return
    try:
        body = _encoder.encode(IngestBatch(events=events))
    except (TypeError, NotImplementedError, OverflowError):
        events = _encodable(events)
        if not events:
            return
        body = _BODY_START + b",".join(_encoder.encode(e) for e in events) + _BODY_END
    if len(body) > max_bytes and len(events) > 1:
        half = len(events) // 2
        _encode_into(bodies, events[:half], max_bytes)
        _encode_into(bodies, events[half:], max_bytes)
        return
    bodies.append((len(events), body))


def _encodable(events: list[TelemetryEvent]) -> list[TelemetryEvent]:
    kept = []
    for event in events:
        try:
            _encoder.encode(event)
        except (TypeError, NotImplementedError, OverflowError) as exc:
            logger.error("event %s left out: it cannot be encoded as JSON: %s", ".".join(event.event_name), exc)
            continue
        kept.append(event)
    return kept


def event_names(body: bytes) -> list[str]:
    """The name of each event of an encoded batch, to say which ones the server refused."""
    return [".".join(map(str, e.event_name or ())) for e in _names_decoder.decode(body).events]
