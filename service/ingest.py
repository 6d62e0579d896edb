"""Telemetry ingest: validate a batch, turn it into log records, append them durably.

A batch becomes one log record per experiment (key = experiment_id) whose value is
its valid events as decoded (`TelemetryRecord`): the warehouse derives its columns
from them, so the event loop spends no time reshaping events. The answer is given
only once the append is durable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from schemas.resources import AnyResourceEvent
from schemas.telemetry import (
    RECORD_CONTENT_TYPE,
    RECORD_EVENTS_HEADER,
    IngestBatch,
    IngestError,
    IngestResponse,
    IngestResult,
    RawIngestBatch,
    TelemetryEvent,
    TelemetryRecord,
)
from service import metrics
from service.commands import resource_record
from service.errors import ApiError, validation_error
from service.log import TELEMETRY_TOPIC, EventLog, LogUnavailable, Record
from service.run_events import RESERVED_PREFIX, RunRouter, is_reserved, reserved_problem

MAX_FUTURE = dt.timedelta(days=1)
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
RETRY_AFTER_SECONDS = "1"

_batch_decoder = msgspec.json.Decoder(IngestBatch)
_raw_batch_decoder = msgspec.json.Decoder(RawIngestBatch)
_event_decoder = msgspec.json.Decoder(TelemetryEvent)
_encoder = msgspec.json.Encoder()


class _Remembered(msgspec.Struct):
    """What an Idempotency-Key maps to: the request's fingerprint and the answer given."""

    fingerprint: str
    status: int
    body: bytes


_remembered_decoder = msgspec.msgpack.Decoder(_Remembered)
_remembered_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    replayed: bool = False


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec says "message - at `$.path`"; return (message, path)."""
    message, _, path = str(exc).partition(" - at `")
    return message, path.rstrip("`") or "$"


@dataclass(slots=True)
class ValidatedBatch:
    events_by_experiment: dict[str, list[TelemetryEvent]]
    accepted: int
    errors: list[IngestError]
    reserved: list[TelemetryEvent]  # valid `crucible.run.*` / `crucible.experiment.*` events


def decode_batch(body: bytes, max_events: int) -> list[TelemetryEvent | IngestError]:
    """Each event decoded, or the reason it was refused (with its index and path).

    Raises ApiError 400 for malformed JSON and 422 when the body is not a batch.
    """
    try:
        return list(_batch_decoder.decode(body).events)  # fast path: the whole batch is valid
    except msgspec.DecodeError:
        pass
    try:
        raw = _raw_batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc)
        raise validation_error(f"body is not a batch of events: {message}", {path: [message]}) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_request", f"malformed JSON: {exc}") from None
    if len(raw.events) > max_events:
        raise too_many_events(len(raw.events), max_events)
    decoded: list[TelemetryEvent | IngestError] = []
    for index, item in enumerate(raw.events):
        try:
            decoded.append(_event_decoder.decode(item))
        except msgspec.ValidationError as exc:
            message, path = split_validation_error(exc)
            decoded.append(IngestError(index=index, message=message, path=f"$.events[{index}]{path[1:]}"))
    return decoded


def too_many_events(count: int, limit: int) -> ApiError:
    return validation_error(
        f"a batch holds at most {limit} events, this one has {count}",
        {"events": [f"at most {limit} events per batch"]},
    )


def check_events(
    decoded: list[TelemetryEvent | IngestError], batch_id: str, received_at: dt.datetime
) -> ValidatedBatch:
    """Check what the schema cannot, fill in `id` and `timestamp`, group valid events by experiment.

    Valid events are completed in place rather than copied: this loop runs for every
    event on the event loop, so it does only what the warehouse cannot do later.
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
    return None


def log_record(experiment_id: str, events: list[TelemetryEvent], batch_id: str, received_at: dt.datetime) -> Record:
    """One experiment's events of a batch as a `crucible.telemetry` record (format v2)."""
    value = _encoder.encode(TelemetryRecord(received_at=received_at, batch_id=batch_id, events=events))
    headers = (("content-type", RECORD_CONTENT_TYPE), (RECORD_EVENTS_HEADER, b"%d" % len(events)))
    return Record(TELEMETRY_TOPIC, experiment_id.encode(), value, headers)


def batch_id_for(idempotency_key: str | None) -> str:
    """Deterministic from the Idempotency-Key, so a retried batch gets the same event ids."""
    if idempotency_key is None:
        return uuid.uuid4().hex[:20]
    return hashlib.blake2b(idempotency_key.encode(), digest_size=10).hexdigest()


Admit = Callable[[int], None]


def _admit_all(events: int) -> None:
    return None


class Ingestor:
    """Validates and appends batches; remembers answers by Idempotency-Key."""

    def __init__(self, log: EventLog, max_events: int, router: RunRouter | None = None) -> None:
        self._log = log
        self._max_events = max_events
        self._router = router
        self._in_flight: dict[str, asyncio.Future[Answer]] = {}

    async def ingest(
        self, body: bytes, idempotency_key: str | None, admit: Admit = _admit_all, actor: str = ""
    ) -> Answer:
        """Validate and append a batch; `admit(n)` is called with the number of valid events
        before anything is appended, and may refuse the batch by raising (rate limits).
        A replayed answer is not admitted again."""
        if idempotency_key is None:
            return await self._ingest(body, None, "", admit, actor)
        fingerprint = hashlib.sha256(body).hexdigest()
        # A retry arriving while the first attempt is still being appended waits for it.
        while (pending := self._in_flight.get(idempotency_key)) is not None:
            await asyncio.shield(pending)
        remembered = await self._log.recall(idempotency_key)
        if remembered is not None:
            return self._replay(_remembered_decoder.decode(remembered), fingerprint)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._in_flight[idempotency_key] = future
        try:
            answer = await self._ingest(body, idempotency_key, fingerprint, admit, actor)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # the waiting retries read it; nobody else must
            raise
        finally:
            del self._in_flight[idempotency_key]

    def _routed(self, reserved: list[TelemetryEvent], actor: str) -> list[AnyResourceEvent]:
        if not reserved or self._router is None:
            return []
        return self._router.resource_events(reserved, actor)

    @staticmethod
    def _replay(remembered: _Remembered, fingerprint: str) -> Answer:
        if remembered.fingerprint != fingerprint:
            raise validation_error(
                "this Idempotency-Key was used with a different request body",
                {"Idempotency-Key": ["was used with a different request body"]},
            )
        return Answer(remembered.status, remembered.body, replayed=True)

    async def _ingest(
        self, body: bytes, idempotency_key: str | None, fingerprint: str, admit: Admit, actor: str
    ) -> Answer:
        decoded = decode_batch(body, self._max_events)
        if len(decoded) > self._max_events:
            raise too_many_events(len(decoded), self._max_events)
        received_at = dt.datetime.now(dt.UTC)
        batch_id = batch_id_for(idempotency_key)
        batch = check_events(decoded, batch_id, received_at)
        metrics.EVENTS_REJECTED.inc(len(batch.errors))
        if batch.accepted == 0:
            raise validation_error(
                "no event in the batch is valid" if decoded else "the batch has no events",
                {"events": [msgspec.to_builtins(e) for e in batch.errors] or ["must not be empty"]},
            )
        admit(batch.accepted)
        answer_body = _encoder.encode(
            IngestResponse(data=IngestResult(accepted=batch.accepted, rejected=len(batch.errors), errors=batch.errors))
        )
        # Lifecycle events go to the resources log in the same append: on the embedded
        # log, one transaction; on Kafka, a retry re-routes them and the fold refuses repeats.
        records = [resource_record(event) for event in self._routed(batch.reserved, actor)]
        records.extend(
            log_record(experiment_id, events, batch_id, received_at)
            for experiment_id, events in batch.events_by_experiment.items()
        )
        remember = None
        if idempotency_key is not None:
            remember = (
                idempotency_key,
                _remembered_encoder.encode(_Remembered(fingerprint, 202, answer_body)),
            )
        started = time.perf_counter()
        try:
            await self._log.append(records, remember)
        except LogUnavailable as exc:
            raise ApiError(
                503,
                "unavailable",
                f"the event log cannot take the batch now, nothing was written: {exc}",
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            ) from None
        metrics.APPEND_SECONDS.observe(time.perf_counter() - started)
        metrics.EVENTS_ACCEPTED.inc(batch.accepted)
        return Answer(202, answer_body)
