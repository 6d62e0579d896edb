"""Helpers of the tests that run `crucible` processes on a tansu broker (tests/log/test_kafka.py,
tests/ingest/test_kafka_idempotency.py); their fixtures are in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaPartition

from service.log.interface import TELEMETRY_TOPIC, WAREHOUSE_GROUP
from tests.support import eventually

EVENTS_URL = "/api/v1/telemetry/events"
# Joining a group on tansu takes ~5 s, and a member of a group's first generation
# (tansu numbers it 0, aiokafka only sends LeaveGroup above 0) is only forgotten
# after its session timeout: waits below allow for both.
GROUP_TIMEOUT = 60.0


async def committed_records(bootstrap: str, partitions: int) -> int:
    """The warehouse group's committed offsets, added up over the telemetry partitions.

    On a broker of the test's own, offsets start at 0 and each record takes one, so
    this equals the records appended exactly when the writers committed them all.
    """
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=WAREHOUSE_GROUP, enable_auto_commit=False)
    await probe.start()
    try:
        offsets = [await probe.committed(KafkaPartition(TELEMETRY_TOPIC, p)) for p in range(partitions)]
    finally:
        await probe.stop()
    return sum(o or 0 for o in offsets)


async def wait_committed(bootstrap: str, partitions: int, records: int) -> None:
    async def all_committed() -> bool:
        committed = await committed_records(bootstrap, partitions)
        assert committed <= records, f"the group committed {committed} offsets for {records} records"
        return committed == records

    await eventually(all_committed, timeout=GROUP_TIMEOUT, interval=0.2)


def kafka_args(command: str, bootstrap: str, data_dir: Path, partitions: int, *extra: str) -> list[str]:
    return [
        command,
        "--kafka",
        bootstrap,
        "--no-kafka-idempotence",
        "--kafka-partitions",
        str(partitions),
        "--data-dir",
        str(data_dir),
        "--writer-flush-seconds",
        "0.1",
        *extra,
    ]
