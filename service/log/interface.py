"""The event log: the interface both logs implement, and the topic names.

The embedded log (`log_sqlite`) and Apache Kafka (`log_kafka`) offer the same
operations, so nothing above this module knows which one runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

TELEMETRY_TOPIC = "crucible.telemetry"
TELEMETRY_DLQ_TOPIC = "crucible.telemetry.dlq"
# Domain events of experiments, models, runs and API keys: one partition (a total
# order every API process folds the same way), never pruned.
RESOURCES_TOPIC = "crucible.resources"
WAREHOUSE_GROUP = "crucible-warehouse"
# Every API process joins it on `crucible.resources` (one partition): the member that owns
# the partition is the one that watches runs for silence (service/resources/run_watch.py).
RUN_WATCH_GROUP = "crucible-run-watch"


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One record to append: `key` routes it to a partition (same key, same partition)."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record read back from the log, with its position."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


class LogUnavailable(Exception):
    """The log cannot take the append now; nothing of it was written (answer 503)."""


class LogWentBack(Exception):
    """A partition gave a record at an offset below one it gave before: the log lost
    records it had (a broker that kept nothing, a topic deleted and made again)."""


class LogConsumer(Protocol):
    """A member of a consumer group with manual commits."""

    async def getmany(self, timeout: float, max_records: int) -> dict[TopicPartition, list[StoredRecord]]:
        """Records after the current position, or {} once `timeout` seconds pass with none."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit, for each partition, the offset of the next record to read."""

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset for a partition, or None."""

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read `partition` from `offset` on."""

    def assignment(self) -> set[TopicPartition]:
        """Partitions this member owns now."""

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop fetching these partitions (backpressure) until `resume`."""

    def resume(self, partitions: Sequence[TopicPartition]) -> None: ...

    async def lag(self) -> int | None:
        """Records in owned partitions not yet committed by the group; None if unknown."""

    async def stop(self) -> None: ...


class LogReader(Protocol):
    """Reads a topic outside any consumer group: one partition from an offset (`reader`),
    or every partition from its end (`tail`); in order within each partition."""

    async def read(self, timeout: float, max_records: int) -> list[StoredRecord]:
        """Records after the last one read, or [] once `timeout` seconds pass with none."""

    async def end_offset(self) -> int | None:
        """The offset the next appended record will get, if the log can tell (one partition only)."""

    async def stop(self) -> None: ...


class PartitionListener(Protocol):
    """Told by a consumer when it gains or loses partitions (Kafka rebalances)."""

    async def on_assigned(self, consumer: LogConsumer, partitions: set[TopicPartition]) -> None: ...

    async def on_revoked(self, consumer: LogConsumer, partitions: set[TopicPartition]) -> None: ...


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """Where a partition stands: its end (the next offset it will give), a group's
    committed offset in it (the next offset the group will read; None: never committed),
    and its start (the first offset it still holds, after retention; None: not known)."""

    partition: int
    end: int | None
    committed: int | None
    start: int | None = None


class EventLog(Protocol):
    """Durable, ordered, partitioned topics."""

    async def start(self) -> None:
        """Connect and create missing topics."""

    async def stop(self) -> None: ...

    async def append(
        self, records: Sequence[Record], remember: tuple[str, bytes] | None = None
    ) -> list[tuple[int, int]]:
        """Append records; returns (partition, offset) of each once all are durable.

        `remember` is an (idempotency key, answer) pair stored with the same write,
        so a retry finds the answer exactly when the records are in the log.
        Raises `LogUnavailable` when the log cannot take them; then nothing was written.
        """

    async def recall(self, idempotency_key: str) -> bytes | None:
        """The answer remembered for an idempotency key, if it is still kept."""

    async def consumer(
        self, group: str, topics: Sequence[str], listener: PartitionListener | None = None
    ) -> LogConsumer:
        """Join `group` on `topics`, reading from its committed offsets (or the beginning)."""

    async def reader(self, topic: str, start: int = 0, partition: int = 0) -> LogReader:
        """Read one partition of `topic` (the only one, for single-partition topics) from offset `start`."""

    async def tail(self, topic: str) -> LogReader:
        """Read every partition of `topic` from its end: only records appended from now on."""

    async def positions(self, topic: str, group: str) -> list[PartitionPosition]:
        """Every partition of `topic` with its end and `group`'s committed offset, without
        joining the group. Raises `LogUnavailable` when the log does not answer."""

    async def group_members(self, group: str) -> list[str] | None:
        """The members of `group` as the log names them (None: the log has no groups of
        processes, as the embedded log). Raises `LogUnavailable` when the log does not answer."""

    async def ping(self) -> bool:
        """Whether the log answers now."""
