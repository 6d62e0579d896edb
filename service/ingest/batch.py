"""A request body made into log record values: decoded, checked, grouped, encoded.

Pure functions of the body, with no I/O and nothing of the server imported, so
that they can run in ingest worker processes (service/ingest/workers.py) as well
as on the event loop. Refusals are `BatchRefused` rather than the API's error
type, which would bring aiohttp into every worker.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import msgspec

from schemas.telemetry import (
    IngestBatch,
    IngestError,
    RawIngestBatch,
    TelemetryEvent,
    TelemetryRecord,
)
from service.core.input_bounds import STORED_NESTING_MESSAGE, TooDeep, decode_bounded, nested_deeper_than
from service.core.problem import Problem, split_validation_error
from service.resources.run_events import RESERVED_PREFIX, is_reserved, reserved_problem

MAX_FUTURE = dt.timedelta(days=1)
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_batch_decoder = msgspec.json.Decoder(IngestBatch)
_raw_batch_decoder = msgspec.json.Decoder(RawIngestBatch)
_event_decoder = msgspec.json.Decoder(TelemetryEvent)
_encoder = msgspec.json.Encoder()


class BatchRefused(Problem):
    """The whole batch is refused, as the API will answer it."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None, rejected: int = 0
    ) -> None:
        super().__init__(status, code, message, details)
        self.rejected = rejected  # events refused one by one before the whole batch was


class PreparedBatch(msgspec.Struct, kw_only=True, gc=False):
    """What the event loop needs of a batch to append it and answer."""

    accepted: int
    errors: list[IngestError]
    # One (experiment_id, TelemetryRecord value, events in it) per experiment of the batch.
    records: list[tuple[str, bytes, int]]
    # Valid events with reserved names (`crucible.run.*`, `crucible.experiment.*`), to route.
    reserved: list[TelemetryEvent]


def validation_refusal(message: str, details: dict[str, Any], rejected: int = 0) -> BatchRefused:
    return BatchRefused(422, "validation_error", message, details, rejected)


def too_deep(exc: TooDeep, where: str) -> BatchRefused:
    """400: JSON nested past the decoder's bound, at `where`."""
    return BatchRefused(400, "bad_request", str(exc), {where: ["nested too deeply"]})


def too_many_events(count: int, limit: int) -> BatchRefused:
    return validation_refusal(
        f"a batch holds at most {limit} events, this one has {count}",
        {"events": [f"at most {limit} events per batch"]},
    )


def prepare_batch(body: bytes, max_events: int, batch_id: str, received_at: dt.datetime) -> PreparedBatch:
    """Decode and check a body, and encode its valid events as one record value per experiment.

    Raises BatchRefused when the body is not JSON (400), not a batch, over the event
    limit, or holds no valid event (422).
    """
    decoded = decode_batch(body, max_events)
    if len(decoded) > max_events:
        raise too_many_events(len(decoded), max_events)
    batch = check_events(decoded, batch_id, received_at)
    if batch.accepted == 0:
        raise validation_refusal(
            "no event in the batch is valid" if decoded else "the batch has no events",
            {"events": [msgspec.to_builtins(e) for e in batch.errors] or ["must not be empty"]},
            rejected=len(batch.errors),
        )
    records = [
        (experiment_id, record_value(events, batch_id, received_at), len(events))
        for experiment_id, events in batch.events_by_experiment.items()
    ]
    return PreparedBatch(accepted=batch.accepted, errors=batch.errors, records=records, reserved=batch.reserved)


def decode_batch(body: bytes, max_events: int) -> list[TelemetryEvent | IngestError]:
    """Each event decoded, or the reason it was refused (with its index and path).

    Raises BatchRefused 400 for malformed JSON and 422 when the body is not a batch.
    """
    try:
        return list(decode_bounded(_batch_decoder.decode, body).events)  # fast path: the whole batch is valid
    except msgspec.DecodeError:
        pass
    except TooDeep as exc:
        raise too_deep(exc, "body") from None
    try:
        raw = decode_bounded(_raw_batch_decoder.decode, body)
    except TooDeep as exc:  # skipping a nested event recurses as well
        raise too_deep(exc, "body") from None
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc)
        raise validation_refusal(f"body is not a batch of events: {message}", {path: [message]}) from None
    except msgspec.DecodeError as exc:
        raise BatchRefused(400, "bad_request", f"malformed JSON: {exc}") from None
    if len(raw.events) > max_events:
        raise too_many_events(len(raw.events), max_events)
    decoded: list[TelemetryEvent | IngestError] = []
    for index, item in enumerate(raw.events):
        try:
            decoded.append(decode_bounded(_event_decoder.decode, item))
        except TooDeep as exc:
            raise too_deep(exc, f"$.events[{index}]") from None
        except msgspec.ValidationError as exc:
            message, path = split_validation_error(exc)
            decoded.append(IngestError(index=index, message=message, path=f"$.events[{index}]{path[1:]}"))
    return decoded


@dataclass(slots=True)
class ValidatedBatch:
    events_by_experiment: dict[str, list[TelemetryEvent]]
    accepted: int
    errors: list[IngestError]
    reserved: list[TelemetryEvent]  # valid `crucible.run.*` / `crucible.experiment.*` events


def check_events(
    decoded: list[TelemetryEvent | IngestError], batch_id: str, received_at: dt.datetime
) -> ValidatedBatch:
    """Check what the schema cannot, fill in `id` and `timestamp`, group valid events by experiment.

    Valid events are completed in place rather than copied: this loop runs for every
    event, so it does only what the warehouse cannot do later.
    """
    latest_allowed = received_at + MAX_FUTURE
    events_by_experiment: dict[str, list[TelemetryEvent]] = defaultdict(list)
    errors: list[IngestError] = []
    reserved: list[TelemetryEvent] = []
    for index, event in enumerate(decoded):
        if isinstance(event, IngestError):
            errors.append(event)
            continue
        problem = _event_problem(event, received_at, latest_allowed)
        # Reserved names (runs and experiments reported by workers) have a shape of their own to check, and are routed.
        reserved_name = problem is None and event.event_name[0] == RESERVED_PREFIX and is_reserved(event.event_name)
        if reserved_name:
            problem = reserved_problem(event)
        if problem is not None:
            message, field = problem
            errors.append(IngestError(index=index, message=message, path=f"$.events[{index}].{field}"))
            continue
        if event.id is None:
            event.id = f"evt_{batch_id}_{index}"
        if reserved_name:
            reserved.append(event)
        events_by_experiment[event.metadata.get("experiment_id", "")].append(event)
    accepted = len(decoded) - len(errors)
    return ValidatedBatch(dict(events_by_experiment), accepted, errors, reserved)


def _event_problem(
    event: TelemetryEvent, received_at: dt.datetime, latest_allowed: dt.datetime
) -> tuple[str, str] | None:
    """(message, field) of what is wrong with a decoded event, or None; completes its timestamp."""
    timestamp = event.timestamp
    if timestamp is None:
        event.timestamp = timestamp = received_at
    elif timestamp.tzinfo is None:
        event.timestamp = timestamp = timestamp.replace(tzinfo=dt.UTC)  # a time without a zone is taken as UTC
    if timestamp > latest_allowed:
        return "timestamp is more than 1 day in the future", "timestamp"
    if timestamp < EARLIEST:
        return "timestamp is before 1970", "timestamp"
    names = event.event_name
    if ".".join(names).count(".") != len(names) - 1:  # names are stored dot-joined
        return "a name segment may not contain '.'", "event_name"
    if event.data and nested_deeper_than(event.data):
        return f"data is {STORED_NESTING_MESSAGE}", "data"
    return None


def record_value(events: list[TelemetryEvent], batch_id: str, received_at: dt.datetime) -> bytes:
    """One experiment's events of a batch as a `crucible.telemetry` record value (format v2)."""
    return _encoder.encode(TelemetryRecord(received_at=received_at, batch_id=batch_id, events=events))
