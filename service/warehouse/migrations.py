"""Schema migrations: the numbered files of `queries/migrations/`, each applied once, in order."""

from __future__ import annotations

import logging

import msgspec

import queries
from service.warehouse.client import Warehouse, WarehouseError

logger = logging.getLogger(__name__)


class _Applied(msgspec.Struct):
    version: int


_decode_applied = msgspec.json.Decoder(_Applied)


async def applied_versions(warehouse: Warehouse) -> set[int]:
    try:
        body = await warehouse.query("migration_applied")
    except WarehouseError as exc:
        if "UNKNOWN_TABLE" in str(exc) or "doesn't exist" in str(exc) or "does not exist" in str(exc):
            return set()
        raise
    return {_decode_applied.decode(line).version for line in body.splitlines() if line}


async def migrate(warehouse: Warehouse) -> list[str]:
    """Apply every migration not applied yet; returns the names applied now."""
    done = await applied_versions(warehouse)
    applied_now = []
    for version, name, sql in queries.migrations():
        if version in done:
            continue
        await warehouse.command(sql)
        await warehouse.insert_rows("schema_migrations", ["version", "name"], [[version, name]])
        logger.info("applied migration %04d_%s", version, name)
        applied_now.append(f"{version:04d}_{name}")
    return applied_now
