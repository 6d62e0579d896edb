"""Where the data is: per partition of `crucible.telemetry`, the log's end, the writers'
committed offset, the lag between them, and what the warehouse holds; and the writers in
the group. Shown by `crucible status` and `GET /readyz?detail=true`.

Each source is asked on its own, so that an outage of one still shows the others: a
broker that is down leaves the warehouse's figures, a warehouse that is down the log's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec

from service.log.interface import TELEMETRY_TOPIC, WAREHOUSE_GROUP, EventLog, LogUnavailable, PartitionPosition
from service.warehouse.client import Warehouse, WarehouseError


class _Stored(msgspec.Struct):
    partition: int
    next_offset: int
    rows: int


_stored_decoder = msgspec.json.Decoder(_Stored)


class PartitionStatus(msgspec.Struct):
    partition: int
    log_end: int | None  # the next offset the log will give
    committed: int | None  # the next offset the writers will read (None: never committed)
    lag: int | None  # records in the log the writers have not committed
    stored_next: int | None  # the offset after the last record the warehouse holds
    stored_rows: int  # events the warehouse holds from this partition


class PipelineStatus(msgspec.Struct):
    partitions: list[PartitionStatus]
    writers: list[str] | None  # members of the writers' group (None: the embedded log has no group)
    log_error: str | None = None
    warehouse_error: str | None = None


@dataclass(frozen=True, slots=True)
class _Read:
    positions: list[PartitionPosition]
    writers: list[str] | None
    error: str | None


async def pipeline_status(log: EventLog, warehouse: Warehouse) -> PipelineStatus:
    read, stored = await asyncio.gather(_read_log(log), _read_warehouse(warehouse))
    held, warehouse_error = stored
    numbers = sorted({p.partition for p in read.positions} | set(held))
    by_number = {p.partition: p for p in read.positions}
    partitions = []
    for number in numbers:
        position = by_number.get(number, PartitionPosition(number, None, None))
        lag = None
        if position.end is not None:
            lag = max(position.end - (position.committed or 0), 0)
        kept = held.get(number)
        partitions.append(
            PartitionStatus(
                number,
                position.end,
                position.committed,
                lag,
                kept.next_offset if kept else None,
                kept.rows if kept else 0,
            )
        )
    return PipelineStatus(partitions, read.writers, read.error, warehouse_error)


async def _read_log(log: EventLog) -> _Read:
    try:
        positions, writers = await asyncio.gather(
            log.positions(TELEMETRY_TOPIC, WAREHOUSE_GROUP), log.group_members(WAREHOUSE_GROUP)
        )
    except LogUnavailable as exc:
        return _Read([], None, str(exc))
    return _Read(positions, writers, None)


async def _read_warehouse(warehouse: Warehouse) -> tuple[dict[int, _Stored], str | None]:
    try:
        body = await warehouse.query("telemetry_stored_offsets")
    except WarehouseError as exc:
        return {}, str(exc)
    rows = (_stored_decoder.decode(line) for line in body.splitlines() if line)
    return {row.partition: row for row in rows}, None


def render(status: PipelineStatus) -> str:
    """The status as a table for a terminal."""
    header = ("partition", "log end", "committed", "lag", "stored up to", "stored events")
    rows = [
        tuple("-" if value is None else f"{value:,}" for value in (
            p.partition, p.log_end, p.committed, p.lag, p.stored_next, p.stored_rows
        ))
        for p in status.partitions
    ]  # fmt: skip
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    if status.writers is None:
        lines.append("writers: the embedded log's, in the serving process")
    else:
        lines.append(f"writers in group {WAREHOUSE_GROUP}: {len(status.writers)}")
        lines.extend(f"  {member}" for member in status.writers)
    for source, error in (("log", status.log_error), ("warehouse", status.warehouse_error)):
        if error:
            lines.append(f"the {source} did not answer: {error}")
    return "\n".join(lines)
