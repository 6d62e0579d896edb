"""The event log on Apache Kafka (or any broker speaking its protocol), through aiokafka.

Idempotency-Key answers are remembered in the memory of the API process that appended
the batch, and Kafka cannot append and remember in one step as the embedded log does.
So a retry that reaches another API replica, or this one restarted between its append
and its answer, is appended again and answered 202 afresh (the same body gives the same
answer). It is still stored once: every attempt's records carry the batch id derived
from the key (header `batch-id`) and have the same key, hence the same partition, and
the single writer of that partition drops every copy after the first
(service/warehouse/retry_window.py). What only this process can do is answer a retry with the
first answer and tell a retry with a different body (422).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka import TopicPartition as KafkaPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from service.log.interface import (
    RESOURCES_TOPIC,
    TELEMETRY_DLQ_TOPIC,
    TELEMETRY_TOPIC,
    LogConsumer,
    LogUnavailable,
    PartitionListener,
    PartitionPosition,
    Record,
    StoredRecord,
    TopicPartition,
)
from service.log.offset_gaps import OffsetGaps

logger = logging.getLogger(__name__)

# A 10,000-event batch of large events is well over Kafka's 1 MB default.
MAX_RECORD_BYTES = 64 * 1024 * 1024
IDEMPOTENCY_MEMORY_ENTRIES = 100_000
# Test hook: exit the process once a batch sent with an Idempotency-Key is in the log,
# before it is remembered or answered, to prove that the client's retry, sent to another
# API process, is stored once.
CRASH_AFTER_APPEND_ENV = "CRUCIBLE_TEST_CRASH_AFTER_APPEND"


class KafkaLog:
    """Topics on a Kafka cluster.

    Idempotency answers are kept in this process's memory; a retry reaching another
    API replica is appended again and dropped by the warehouse writer (see above).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        telemetry_partitions: int,
        replication_factor: int = 1,
        idempotence: bool = True,
        request_timeout: float = 10.0,
        session_timeout: float = 6.0,
        idempotency_ttl_seconds: int = 86_400,
    ) -> None:
        self._servers = bootstrap_servers
        self._partitions = telemetry_partitions
        self._replication = replication_factor
        self._idempotence = idempotence
        self._timeout = request_timeout
        self._session_timeout = session_timeout
        self._ttl = idempotency_ttl_seconds
        self._producer: AIOKafkaProducer | None = None
        self._probes: dict[str, AIOKafkaConsumer] = {}  # per group: reads its commits without joining it
        self._answers: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._crash_after_append = os.environ.get(CRASH_AFTER_APPEND_ENV) == "1"

    async def start(self) -> None:
        await self.ensure_topics()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._servers,
            acks="all",
            enable_idempotence=self._idempotence,
            max_request_size=MAX_RECORD_BYTES,
            request_timeout_ms=int(self._timeout * 1000),
            linger_ms=2,
        )
        await self._producer.start()

    async def ensure_topics(self) -> None:
        """Create the telemetry and resources topics when they are missing."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._servers, request_timeout_ms=int(self._timeout * 1000))
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            telemetry_configs = {"max.message.bytes": str(MAX_RECORD_BYTES)}
            # The resources topic is the source of truth of every projection: one
            # partition for a total order, and kept forever.
            resources_configs = {**telemetry_configs, "retention.ms": "-1", "retention.bytes": "-1"}
            topics = {
                TELEMETRY_TOPIC: (self._partitions, telemetry_configs),
                TELEMETRY_DLQ_TOPIC: (self._partitions, telemetry_configs),
                RESOURCES_TOPIC: (1, resources_configs),
            }
            wanted = [
                NewTopic(name, num_partitions=partitions, replication_factor=self._replication, topic_configs=configs)
                for name, (partitions, configs) in topics.items()
                if name not in existing
            ]
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(wanted)
                logger.info("created topics %s", ", ".join(t.name for t in wanted))
        finally:
            await admin.close()

    async def stop(self) -> None:
        probes, self._probes = list(self._probes.values()), {}
        for probe in probes:
            await probe.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def append(
        self, records: Sequence[Record], remember: tuple[str, bytes] | None = None
    ) -> list[tuple[int, int]]:
        if self._producer is None:
            raise LogUnavailable("the log is not running")
        try:
            sends = [await self._producer.send(r.topic, r.value, key=r.key, headers=list(r.headers)) for r in records]
            metadata = await asyncio.wait_for(asyncio.gather(*sends), self._timeout)
        except (KafkaError, TimeoutError) as exc:
            raise LogUnavailable(f"Kafka did not take the append: {exc!r}") from exc
        if remember is not None:
            if self._crash_after_append:
                logger.error("%s set: exiting between append and answer", CRASH_AFTER_APPEND_ENV)
                os._exit(3)
            self._remember(*remember)
        return [(m.partition, m.offset) for m in metadata]

    def _remember(self, key: str, answer: bytes) -> None:
        self._answers[key] = (time.monotonic(), answer)
        self._answers.move_to_end(key)
        while len(self._answers) > IDEMPOTENCY_MEMORY_ENTRIES:
            self._answers.popitem(last=False)

    async def recall(self, idempotency_key: str) -> bytes | None:
        found = self._answers.get(idempotency_key)
        if found is None or time.monotonic() - found[0] > self._ttl:
            return None
        return found[1]

    async def ping(self) -> bool:
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), self._timeout)
        except (KafkaError, TimeoutError):
            return False
        return True

    async def positions(self, topic: str, group: str) -> list[PartitionPosition]:
        try:
            probe = await self._probe(group)
            await probe.topics()  # loads the metadata that names the topic's partitions
            partitions = [KafkaPartition(topic, n) for n in sorted(probe.partitions_for_topic(topic) or ())]
            ends, starts, committed = await asyncio.wait_for(
                asyncio.gather(
                    probe.end_offsets(partitions),
                    probe.beginning_offsets(partitions),
                    asyncio.gather(*map(probe.committed, partitions)),
                ),
                self._timeout,
            )
        except (KafkaError, TimeoutError) as exc:
            raise LogUnavailable(f"Kafka did not say where {topic} stands: {exc!r}") from exc
        return [
            PartitionPosition(tp.partition, ends.get(tp), None if offset is None else int(offset), starts.get(tp))
            for tp, offset in zip(partitions, committed, strict=True)
        ]

    async def group_members(self, group: str) -> list[str] | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._servers, request_timeout_ms=int(self._timeout * 1000))
        try:
            await admin.start()
            answers = await asyncio.wait_for(admin.describe_consumer_groups([group]), self._timeout)
        except (KafkaError, TimeoutError) as exc:
            raise LogUnavailable(f"Kafka did not describe group {group}: {exc!r}") from exc
        finally:
            await admin.close()
        return sorted(member[0] for answer in answers for described in answer.groups for member in described[5])

    async def _probe(self, group: str) -> AIOKafkaConsumer:
        """A consumer with `group`'s id that never subscribes: it asks for the group's
        committed offsets (OffsetFetch) without joining it, so no rebalance is caused."""
        probe = self._probes.get(group)
        if probe is None:
            probe = AIOKafkaConsumer(
                bootstrap_servers=self._servers,
                group_id=group,
                enable_auto_commit=False,
                request_timeout_ms=max(int(self._timeout * 1000), 40_000),
            )
            await probe.start()
            if group in self._probes:  # another call made one while this one started
                await probe.stop()
                return self._probes[group]
            self._probes[group] = probe
        return probe

    async def reader(self, topic: str, start: int = 0, partition: int = 0) -> KafkaReader:
        consumer = await self._groupless_consumer()
        tp = KafkaPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        reader = KafkaReader(consumer, [tp])
        reader.gaps.expect(tp, start)
        return reader

    async def tail(self, topic: str) -> KafkaReader:
        consumer = await self._groupless_consumer()
        await consumer.topics()  # loads the metadata that names the topic's partitions
        numbers = consumer.partitions_for_topic(topic) or {0}
        partitions = [KafkaPartition(topic, number) for number in sorted(numbers)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        return KafkaReader(consumer, partitions)

    async def _groupless_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._servers,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=MAX_RECORD_BYTES,
            fetch_max_bytes=MAX_RECORD_BYTES,
            # A change made through another API process must be visible here within a second.
            fetch_max_wait_ms=100,
            request_timeout_ms=max(int(self._timeout * 1000), 40_000),
        )
        await consumer.start()
        return consumer

    async def consumer(
        self, group: str, topics: Sequence[str], listener: PartitionListener | None = None
    ) -> LogConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._servers,
            group_id=group,
            # Names the member in the group's description (`crucible status`): which host, which process.
            client_id=f"crucible-{socket.gethostname()}-{os.getpid()}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A killed member's partitions wait this long for another member (aiokafka's
            # default is 10 s, heartbeats every 3 s). Heartbeats run on the event loop,
            # which never blocks for seconds, so a short session does not evict a live writer.
            session_timeout_ms=int(self._session_timeout * 1000),
            heartbeat_interval_ms=max(int(self._session_timeout * 1000 / 6), 100),
            max_partition_fetch_bytes=MAX_RECORD_BYTES,
            fetch_max_bytes=MAX_RECORD_BYTES,
            request_timeout_ms=max(int(self._timeout * 1000), 40_000),
        )
        await consumer.start()
        wrapped = KafkaConsumer(consumer)
        consumer.subscribe(list(topics), listener=_Listener(wrapped, listener) if listener else None)
        return wrapped


class KafkaReader:
    """Reads partitions of one topic without a consumer group (every process reads them all)."""

    def __init__(self, consumer: AIOKafkaConsumer, partitions: list[KafkaPartition]) -> None:
        self._consumer = consumer
        self._partitions = partitions
        self.gaps = OffsetGaps()

    async def read(self, timeout: float, max_records: int) -> list[StoredRecord]:
        fetched = await self._consumer.getmany(
            *self._partitions, timeout_ms=int(timeout * 1000), max_records=max_records
        )
        return [_stored(r) for records in _without_holes(self._consumer, self.gaps, fetched).values() for r in records]

    async def end_offset(self) -> int | None:
        if len(self._partitions) != 1:
            return None
        try:
            ends = await self._consumer.end_offsets(self._partitions)
        except KafkaError:
            return None
        return int(ends[self._partitions[0]])

    async def stop(self) -> None:
        await self._consumer.stop()


def _without_holes(
    consumer: AIOKafkaConsumer, gaps: OffsetGaps, fetched: dict[KafkaPartition, list[ConsumerRecord[bytes, bytes]]]
) -> dict[KafkaPartition, Sequence[ConsumerRecord[bytes, bytes]]]:
    """Each partition's records up to a hole in its offsets; a partition with a hole is read
    again from it (service/log/offset_gaps.py)."""
    admitted = {}
    for tp, records in fetched.items():
        kept, reread_from = gaps.admit(tp, records)
        if reread_from is not None:
            consumer.seek(tp, reread_from)
        if kept:
            admitted[tp] = kept
    return admitted


def _stored(r: ConsumerRecord[bytes, bytes]) -> StoredRecord:
    return StoredRecord(
        r.topic, r.partition, r.offset, r.key or b"", r.value or b"", tuple((k, v) for k, v in r.headers), r.timestamp
    )


def _ours(tp: KafkaPartition) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _theirs(tp: TopicPartition) -> KafkaPartition:
    return KafkaPartition(tp.topic, tp.partition)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka awaits these before the rebalance completes, so a revoked partition's
    pending batch is inserted and committed before another member takes it over."""

    def __init__(self, consumer: KafkaConsumer, listener: PartitionListener) -> None:
        self._consumer = consumer
        self._listener = listener

    async def on_partitions_revoked(self, revoked: list[KafkaPartition]) -> None:
        self._consumer.forget(revoked)
        await self._listener.on_revoked(self._consumer, {_ours(tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[KafkaPartition]) -> None:
        self._consumer.forget(assigned)  # their positions are the group's commits, unknown here
        await self._listener.on_assigned(self._consumer, {_ours(tp) for tp in assigned})


class KafkaConsumer:
    """`LogConsumer` over an aiokafka consumer."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self._gaps = OffsetGaps()

    async def getmany(self, timeout: float, max_records: int) -> dict[TopicPartition, list[StoredRecord]]:
        fetched = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        admitted = _without_holes(self._consumer, self._gaps, fetched)
        return {_ours(tp): [_stored(r) for r in records] for tp, records in admitted.items()}

    def forget(self, partitions: Sequence[KafkaPartition]) -> None:
        for tp in partitions:
            self._gaps.forget(tp)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self._consumer.commit({_theirs(tp): offset for tp, offset in offsets.items()})

    async def committed(self, partition: TopicPartition) -> int | None:
        result = await self._consumer.committed(_theirs(partition))
        return int(result) if result is not None else None

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(_theirs(partition), offset)
        self._gaps.expect(_theirs(partition), offset)

    def assignment(self) -> set[TopicPartition]:
        return {_ours(tp) for tp in self._consumer.assignment()}

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        owned = self._consumer.assignment()
        self._consumer.pause(*[_theirs(tp) for tp in partitions if _theirs(tp) in owned])

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        owned = self._consumer.assignment()
        self._consumer.resume(*[_theirs(tp) for tp in partitions if _theirs(tp) in owned])

    async def lag(self) -> int | None:
        total = 0
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            committed = await self._consumer.committed(tp)
            if high is None:
                return None
            total += max(high - (committed or 0), 0)
        return total

    async def stop(self) -> None:
        await self._consumer.stop()
