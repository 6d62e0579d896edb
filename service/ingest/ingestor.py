"""Telemetry ingest: validate a batch, turn it into log records, append them durably.

A batch becomes one log record per experiment (key = experiment_id) whose value is
its valid events as decoded (`TelemetryRecord`): the warehouse derives its columns
from them, so nobody spends time reshaping events. Large batches are decoded in
worker processes (service/ingest/workers.py); the event loop checks the
Idempotency-Key, the rate limit and routes lifecycle events. The answer is given
only once the append is durable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from schemas.resources import AnyResourceEvent
from schemas.telemetry import (
    RECORD_BATCH_HEADER,
    RECORD_CONTENT_TYPE,
    RECORD_EVENTS_HEADER,
    IngestResponse,
    IngestResult,
    TelemetryEvent,
)
from service.core import metrics
from service.core.errors import ApiError
from service.core.keyed_locks import KeyedLocks
from service.ingest.batch import BatchRefused, PreparedBatch
from service.ingest.workers import IngestWorkers, WorkersUnavailable
from service.log.interface import TELEMETRY_TOPIC, EventLog, LogUnavailable, Record
from service.resources.commands import different_request, resource_record
from service.resources.run_events import RunRouter
from service.warehouse.backpressure import Backpressure

RETRY_AFTER_SECONDS = "1"

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


def telemetry_record(experiment_id: str, value: bytes, events: int, retry_batch_id: str | None = None) -> Record:
    """A prepared record value (service/ingest/batch.py) as a `crucible.telemetry` record.

    `retry_batch_id` is the batch id of a batch sent with an Idempotency-Key: the writer
    drops a record whose (batch id, key) it has stored already (service/warehouse/retry_window.py).
    """
    headers: tuple[tuple[str, bytes], ...] = (
        ("content-type", RECORD_CONTENT_TYPE),
        (RECORD_EVENTS_HEADER, b"%d" % events),
    )
    if retry_batch_id is not None:
        headers += ((RECORD_BATCH_HEADER, retry_batch_id.encode()),)
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

    def __init__(
        self,
        log: EventLog,
        max_events: int,
        router: RunRouter | None = None,
        workers: IngestWorkers | None = None,
        backpressure: Backpressure | None = None,
    ) -> None:
        self._log = log
        self._max_events = max_events
        self._router = router
        self.workers = workers or IngestWorkers(0, 0)
        self._backpressure = backpressure
        self._in_flight = KeyedLocks()

    async def ingest(
        self, body: bytes, idempotency_key: str | None, admit: Admit = _admit_all, actor: str = ""
    ) -> Answer:
        """Validate and append a batch; `admit(n)` is called with the number of valid events
        before anything is appended, and may refuse the batch by raising (rate limits).
        A replayed answer is not admitted again."""
        if idempotency_key is None:
            return await self._ingest(body, None, "", admit, actor)
        fingerprint = hashlib.sha256(body).hexdigest()
        # Recall and append under the key's lock: copies arriving together wait for the
        # first attempt and replay its answer instead of each appending the batch.
        async with self._in_flight.hold(idempotency_key):
            remembered = await self._log.recall(idempotency_key)
            if remembered is not None:
                return self._replay(_remembered_decoder.decode(remembered), fingerprint)
            return await self._ingest(body, idempotency_key, fingerprint, admit, actor)

    def _routed(self, reserved: list[TelemetryEvent], actor: str) -> list[AnyResourceEvent]:
        if not reserved or self._router is None:
            return []
        return self._router.resource_events(reserved, actor)

    @staticmethod
    def _replay(remembered: _Remembered, fingerprint: str) -> Answer:
        if remembered.fingerprint != fingerprint:
            raise different_request()
        return Answer(remembered.status, remembered.body, replayed=True)

    async def _ingest(
        self, body: bytes, idempotency_key: str | None, fingerprint: str, admit: Admit, actor: str
    ) -> Answer:
        batch_id = batch_id_for(idempotency_key)
        batch = await self._prepare(body, batch_id)
        metrics.EVENTS_REJECTED.inc(len(batch.errors))
        admit(batch.accepted)
        answer_body = _encoder.encode(
            IngestResponse(data=IngestResult(accepted=batch.accepted, rejected=len(batch.errors), errors=batch.errors))
        )
        # Lifecycle events go to the resources log in the same append: on the embedded
        # log, one transaction; on Kafka, a retry re-routes them and the fold refuses repeats.
        records = [resource_record(event) for event in self._routed(batch.reserved, actor)]
        retry_batch_id = batch_id if idempotency_key is not None else None
        records.extend(telemetry_record(*record, retry_batch_id) for record in batch.records)
        remember = None
        if idempotency_key is not None:
            remember = (
                idempotency_key,
                _remembered_encoder.encode(_Remembered(fingerprint, 202, answer_body)),
            )
        if self._backpressure is not None:
            await self._backpressure.wait_for_room()
        started = time.perf_counter()
        try:
            positions = await self._log.append(records, remember)
        except LogUnavailable as exc:
            raise _unavailable(f"the event log cannot take the batch now, nothing was written: {exc}") from None
        metrics.APPEND_SECONDS.observe(time.perf_counter() - started)
        if self._backpressure is not None and batch.records:  # they come last, after any resource records
            self._backpressure.appended(positions[-len(batch.records) :], (events for _, _, events in batch.records))
        metrics.EVENTS_ACCEPTED.inc(batch.accepted)
        return Answer(202, answer_body)

    async def _prepare(self, body: bytes, batch_id: str) -> PreparedBatch:
        try:
            return await self.workers.prepare(body, self._max_events, batch_id, dt.datetime.now(dt.UTC))
        except BatchRefused as refused:
            metrics.EVENTS_REJECTED.inc(refused.rejected)
            raise ApiError(refused.status, refused.code, refused.message, refused.details) from None
        except WorkersUnavailable as exc:
            raise _unavailable(f"the batch could not be decoded now, nothing was written: {exc}") from None


def _unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": RETRY_AFTER_SECONDS})
