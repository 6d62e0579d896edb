"""Ingest waits for the warehouse writer when it falls behind, but never refuses data for it."""

from __future__ import annotations

import asyncio
from typing import Any

from service.core import metrics
from service.log.interface import TELEMETRY_TOPIC
from service.warehouse.backpressure import Backpressure, WriterProgress
from tests.ingest.test_ingest_api import URL, event, stored_count
from tests.support import eventually


def waits() -> float:
    return metrics.INGEST_BACKPRESSURE_SECONDS._sum.get()  # type: ignore[attr-defined,no-any-return]


async def test_a_batch_waits_for_the_writer_then_is_appended_anyway(app_client: Any) -> None:
    # The writer holds rows for 5 s, so the second batch finds it 2 events behind.
    client = await app_client(
        ingest_max_writer_lag_events=1, ingest_max_backpressure_seconds=0.3, writer_flush_seconds=5.0
    )
    assert (await client.post(URL, json={"events": [event(), event()]})).status == 202
    waited_before = waits()
    assert (await client.post(URL, json={"events": [event()]})).status == 202
    assert waits() - waited_before >= 0.3

    async def stored() -> bool:
        return await stored_count(client) == 3

    await eventually(stored)


async def test_a_waiting_batch_goes_on_as_soon_as_the_writer_catches_up(app_client: Any) -> None:
    client = await app_client(
        ingest_max_writer_lag_events=1, ingest_max_backpressure_seconds=60.0, writer_flush_seconds=0.3
    )
    assert (await client.post(URL, json={"events": [event(), event()]})).status == 202
    answer = await asyncio.wait_for(client.post(URL, json={"events": [event()]}), 20)
    assert answer.status == 202


async def test_a_process_without_a_writer_does_not_wait(app_client: Any) -> None:
    client = await app_client(ingest_max_writer_lag_events=1, ingest_max_backpressure_seconds=60.0, writer=False)
    for _ in range(3):
        answer = await asyncio.wait_for(client.post(URL, json={"events": [event(), event()]}), 20)
        assert answer.status == 202


async def test_the_lag_counts_each_partition_against_its_own_commit() -> None:
    progress = WriterProgress()
    backpressure = Backpressure(progress, max_lag_events=10, max_wait_seconds=0.1)
    backpressure.appended([(0, 5), (1, 7), (0, 6)], [3, 4, 5])
    assert backpressure.lag_events == 12
    progress.advance(TELEMETRY_TOPIC, 0, 6)  # partition 0's first record is stored
    assert backpressure.lag_events == 9
    progress.advance(TELEMETRY_TOPIC, 1, 100)
    progress.advance("crucible.resources", 0, 100)  # another topic's commits say nothing
    assert backpressure.lag_events == 5
    progress.advance(TELEMETRY_TOPIC, 0, 5)  # a commit never goes back
    assert progress.committed == {0: 6, 1: 100}


async def test_readyz_detail_says_where_the_data_is(app_client: Any) -> None:
    client = await app_client()
    assert (await client.post(URL, json={"events": [event(), event(), event()]})).status == 202

    async def stored_and_committed() -> bool:
        answer = await client.get("/readyz", params={"detail": "true"})
        pipeline = (await answer.json())["data"]["pipeline"]
        (partition,) = pipeline["partitions"]
        assert pipeline["writers"] is None  # the embedded log's writer is the serving process
        return partition["stored_rows"] == 3 and partition["lag"] == 0 and partition["committed"] is not None

    await eventually(stored_and_committed)
    assert "pipeline" not in (await (await client.get("/readyz")).json())["data"]
    assert (await client.get("/readyz", params={"detail": "yes"})).status == 422
