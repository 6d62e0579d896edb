"""What `crucible keys`, `crucible replay` and `crucible status` do: work on the log (and, for
status, the warehouse) directly, no server needed.

They open the configured log (the data dir's embedded log, or Kafka) beside any
running server; the embedded log takes appends from several processes safely.
"""

from __future__ import annotations

import base64
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, TextIO

import msgspec

from schemas.resources import RateLimits
from service.app import make_log
from service.core.errors import ApiError
from service.log.interface import EventLog, StoredRecord
from service.resources.credentials import SCOPES
from service.resources.keys import create_key, key_out, revoke_key
from service.resources.projector import Projector
from service.settings import Settings
from service.warehouse.client import Warehouse
from service.warehouse.pipeline import pipeline_status, render

CLI_ACTOR = "cli"

_encoder = msgspec.json.Encoder()


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[tuple[EventLog, Projector]]:
    """The log, and a projector that has replayed the resources topic."""
    log = make_log(settings)
    await log.start()
    projector = Projector(log, settings.idempotency_ttl_seconds)
    try:
        await projector.start()
        yield log, projector
    finally:
        await projector.stop()
        await log.stop()


async def keys_create(
    settings: Settings, name: str, scopes: Sequence[str], rate_limits: RateLimits, out: TextIO = sys.stdout
) -> str:
    """Create a key and print its secret (the only time it is shown); returns the secret."""
    async with open_resources(settings) as (log, projector):
        done, secret = await create_key(log, projector, name, scopes, rate_limits, CLI_ACTOR)
    assert secret is not None
    print(f"created API key {done.resource_id} ({', '.join(scopes)}); its secret, shown only now:", file=out)
    print(secret, file=out)
    return secret


async def keys_list(settings: Settings, out: TextIO = sys.stdout) -> None:
    async with open_resources(settings) as (_, projector):
        keys = list(projector.state.api_keys.values())
    print(f"{'ID':<22} {'NAME':<30} {'SCOPES':<26} {'CREATED':<26} REVOKED", file=out)
    for key in keys:
        scopes = ",".join(sorted(key.scopes, key=SCOPES.index))
        revoked = key.revoked_at.isoformat() if key.revoked_at else "-"
        print(f"{key.id:<22} {key.name[:30]:<30} {scopes:<26} {key.created_at.isoformat():<26} {revoked}", file=out)


async def keys_revoke(settings: Settings, key_id: str, out: TextIO = sys.stdout) -> None:
    async with open_resources(settings) as (log, projector):
        if key_id not in projector.state.api_keys:
            raise ApiError(404, "not_found", f"API key {key_id} not found")
        done = await revoke_key(log, projector, key_id, CLI_ACTOR)
        key = done.state.api_keys[key_id]
    print(f"revoked API key {key.id} ({key.name}) at {key_out(key).revoked_at}", file=out)


async def replay(settings: Settings, topic: str, start: int, out: TextIO = sys.stdout) -> int:
    """Print the records of `topic` from `start` as JSON lines, until the end; returns how many."""
    log = make_log(settings)
    await log.start()
    count = 0
    try:
        reader = await log.reader(topic, start)
        try:
            end = await reader.end_offset()
            while end is None or start + count < end:
                records = await reader.read(timeout=1.0, max_records=10_000)
                if not records:
                    break
                for record in records:
                    out.write(_encoder.encode(record_view(record)).decode() + "\n")
                count += len(records)
        finally:
            await reader.stop()
    finally:
        await log.stop()
    return count


def record_view(record: StoredRecord) -> dict[str, Any]:
    """A record as JSON: the value decoded when it is JSON (or JSON lines), else base64."""
    value: Any
    try:
        value = msgspec.json.decode(record.value)
    except msgspec.DecodeError:
        try:
            value = [msgspec.json.decode(line) for line in record.value.splitlines() if line]
        except msgspec.DecodeError:
            value = {"base64": base64.b64encode(record.value).decode()}
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "key": record.key.decode(errors="replace"),
        "headers": {name: v.decode(errors="replace") for name, v in record.headers},
        "value": value,
    }


async def status(settings: Settings, as_json: bool, out: TextIO = sys.stdout) -> None:
    """Print where the data is: per partition, the log's end, the writers' commits, the
    warehouse's holdings; and the writers in the group."""
    log = make_log(settings)
    await log.start()
    warehouse = Warehouse(settings)
    try:
        try:
            await warehouse.start()
        except Exception as exc:  # chDB: its directory is held by a running `crucible serve`
            raise ApiError(
                503,
                "unavailable",
                f"cannot open the warehouse ({exc}); a running server answers GET /readyz?detail=true",
            ) from None
        found = await pipeline_status(log, warehouse)
    finally:
        await warehouse.stop()
        await log.stop()
    out.write((_encoder.encode(found).decode() if as_json else render(found)) + "\n")
