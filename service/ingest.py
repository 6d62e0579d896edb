"""Telemetry ingest: validate a batch, turn it into log records, append them durably.

A batch becomes one log record per experiment (key = experiment_id) whose value is
the events as JSON lines in the warehouse's row shape, so the writer only has to
concatenate records. The answer is given only once the append is durable.
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

from schemas.telemetry import (
    IngestBatch,
    IngestError,
    IngestResponse,
    IngestResult,
    RawIngestBatch,
    TelemetryEvent,
    WarehouseRow,
)
from service import metrics
from service.errors import ApiError, validation_error
from service.log import TELEMETRY_TOPIC, EventLog, LogUnavailable, Record

RECORD_FORMAT = (("content-type", b"application/x-ndjson; row=crucible.telemetry.v1"),)
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
    rows_by_experiment: dict[str, list[WarehouseRow]]
    accepted: int
    errors: list[IngestError]


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


def build_rows(decoded: list[TelemetryEvent | IngestError], batch_id: str, received_at: dt.datetime) -> ValidatedBatch:
    """Turn valid events into warehouse rows grouped by experiment; check what the schema cannot."""
    latest_allowed = received_at + MAX_FUTURE
    rows_by_experiment: dict[str, list[WarehouseRow]] = defaultdict(list)
    errors: list[IngestError] = []
    accepted = 0
    for index, event in enumerate(decoded):
        if isinstance(event, IngestError):
            errors.append(event)
            continue
        timestamp = event.timestamp
        if timestamp is None:
            timestamp = received_at
        elif timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=dt.UTC)  # a time without a zone is taken as UTC
        if timestamp > latest_allowed or timestamp < EARLIEST:
            problem = "is more than 1 day in the future" if timestamp > latest_allowed else "is before 1970"
            errors.append(IngestError(index=index, message=f"timestamp {problem}", path=f"$.events[{index}].timestamp"))
            continue
        event_name = ".".join(event.event_name)
        if event_name.count(".") != len(event.event_name) - 1:
            errors.append(
                IngestError(
                    index=index, message="a name segment may not contain '.'", path=f"$.events[{index}].event_name"
                )
            )
            continue
        metadata = event.metadata
        experiment_id = metadata.get("experiment_id", "")
        rows_by_experiment[experiment_id].append(
            WarehouseRow(
                id=event.id or f"evt_{batch_id}_{index}",
                event_name=event_name,
                experiment_id=experiment_id,
                run_id=metadata.get("run_id", ""),
                model=metadata.get("model", ""),
                timestamp=timestamp,
                received_at=received_at,
                measurements=event.measurements,
                metadata=metadata,
                data="" if event.data is None else _encoder.encode(event.data).decode(),
                batch_id=batch_id,
            )
        )
        accepted += 1
    return ValidatedBatch(dict(rows_by_experiment), accepted, errors)


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

    def __init__(self, log: EventLog, max_events: int) -> None:
        self._log = log
        self._max_events = max_events
        self._in_flight: dict[str, asyncio.Future[Answer]] = {}

    async def ingest(self, body: bytes, idempotency_key: str | None, admit: Admit = _admit_all) -> Answer:
        """Validate and append a batch; `admit(n)` is called with the number of valid events
        before anything is appended, and may refuse the batch by raising (rate limits).
        A replayed answer is not admitted again."""
        if idempotency_key is None:
            return await self._ingest(body, None, "", admit)
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
            answer = await self._ingest(body, idempotency_key, fingerprint, admit)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # the waiting retries read it; nobody else must
            raise
        finally:
            del self._in_flight[idempotency_key]

    @staticmethod
    def _replay(remembered: _Remembered, fingerprint: str) -> Answer:
        if remembered.fingerprint != fingerprint:
            raise validation_error(
                "this Idempotency-Key was used with a different request body",
                {"Idempotency-Key": ["was used with a different request body"]},
            )
        return Answer(remembered.status, remembered.body, replayed=True)

    async def _ingest(self, body: bytes, idempotency_key: str | None, fingerprint: str, admit: Admit) -> Answer:
        decoded = decode_batch(body, self._max_events)
        if len(decoded) > self._max_events:
            raise too_many_events(len(decoded), self._max_events)
        received_at = dt.datetime.now(dt.UTC)
        batch = build_rows(decoded, batch_id_for(idempotency_key), received_at)
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
        records = [
            Record(TELEMETRY_TOPIC, experiment_id.encode(), _encoder.encode_lines(rows), RECORD_FORMAT)
            for experiment_id, rows in batch.rows_by_experiment.items()
        ]
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
