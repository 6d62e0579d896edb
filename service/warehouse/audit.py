"""The audit writer: copies `crucible.resources` into the `resource_events` table.

The log is the source of truth; the table lets an operator ask who changed what,
and when, in SQL. Each batch is inserted with a deduplication token for its
offset range and committed after, and a restart resumes after the last offset
the table holds, so every event is copied exactly once (as the telemetry writer).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import msgspec

from service.core import metrics
from service.log.interface import RESOURCES_TOPIC, EventLog, StoredRecord, TopicPartition
from service.warehouse.client import Warehouse, WarehouseError

logger = logging.getLogger(__name__)

AUDIT_GROUP = "crucible-audit"
TABLE = "resource_events"
BATCH_RECORDS = 2_000
RETRY_SECONDS = (0.5, 1, 2, 5, 10)


class _Envelope(msgspec.Struct):
    """The fields of any resource event the table has columns for."""

    event: str = ""
    at: str = ""
    actor: str = ""


class _Row(msgspec.Struct):
    log_offset: int
    event: str
    resource_id: str
    at: str
    actor: str
    body: str


class _Resume(msgspec.Struct):
    next_offset: int | None
    rows: int


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_resume_decoder = msgspec.json.Decoder(_Resume)
_encoder = msgspec.json.Encoder()
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC).isoformat()


def audit_rows(records: list[StoredRecord]) -> bytes:
    rows = []
    for record in records:
        try:
            envelope = _envelope_decoder.decode(record.value)
        except msgspec.DecodeError:
            envelope = _Envelope(event="undecodable")
        rows.append(
            _Row(
                log_offset=record.offset,
                event=envelope.event,
                resource_id=record.key.decode(errors="replace"),
                at=envelope.at or _EPOCH,
                actor=envelope.actor,
                body=record.value.decode(errors="replace"),
            )
        )
    return _encoder.encode_lines(rows)


class AuditWriter:
    def __init__(self, log: EventLog, warehouse: Warehouse) -> None:
        self._log = log
        self._warehouse = warehouse
        self.copied = 0

    async def run(self) -> None:
        consumer = await self._log.consumer(AUDIT_GROUP, [RESOURCES_TOPIC])
        partition = TopicPartition(RESOURCES_TOPIC, 0)
        try:
            committed = await consumer.committed(partition) or 0
            resume = _resume_decoder.decode(await self._warehouse.query("resource_events_resume"))
            if resume.rows and resume.next_offset is not None and resume.next_offset > committed:
                consumer.seek(partition, resume.next_offset)  # a crash came between insert and commit
            while True:
                fetched = await consumer.getmany(timeout=1.0, max_records=BATCH_RECORDS)
                for tp, records in fetched.items():
                    await self._insert(records)
                    await consumer.commit({tp: records[-1].offset + 1})
                    self.copied += len(records)
                    metrics.AUDIT_POSITION.set(records[-1].offset + 1)
        finally:
            await consumer.stop()

    async def _insert(self, records: list[StoredRecord]) -> None:
        token = f"{RESOURCES_TOPIC}:0:{records[0].offset}-{records[-1].offset}"
        # Off the event loop: catching up on a long log must not stall API requests.
        body = await asyncio.to_thread(audit_rows, records)
        attempt = 0
        while True:  # a warehouse that is down delays the copy; the log keeps the events meanwhile
            try:
                await self._warehouse.insert_json_lines(TABLE, body, token)
                return
            except WarehouseError as exc:
                pause = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                attempt += 1
                logger.warning("audit insert failed (attempt %d), retrying in %s s: %s", attempt, pause, exc)
                await asyncio.sleep(pause)
