"""Ingest worker processes: large batches are decoded and encoded off the event loop.

Decoding a 1,000-event batch makes and frees some 15,000 Python objects; on the
event loop that work, not the HTTP or the log, was what capped ingest (the loop
was saturated while a core sat idle, and durable appends waited for it to be
free). Each worker takes a body's bytes and returns the record values ready to
append, so the loop only moves bytes. A small body is prepared in place: sending
it to a process would cost more than decoding it.

Workers are started with `spawn`, never `fork`: the server runs chDB's threads.
A worker that dies takes only its own batch with it: that batch is answered 503
(nothing was appended) and the pool is started again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from service.ingest_batch import PreparedBatch, prepare_batch, warm_up

logger = logging.getLogger(__name__)


class WorkersUnavailable(Exception):
    """The worker preparing a batch died; nothing of the batch was appended."""


class IngestWorkers:
    """Prepares batches in `processes` worker processes, or in place when there are none."""

    def __init__(self, processes: int, inline_below_bytes: int) -> None:
        self._processes = processes
        self._inline_below = inline_below_bytes
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        if self._processes == 0:
            return
        self._pool = self._new_pool()
        await self._warm(self._pool)

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def prepare(
        self, body: bytes, max_events: int, batch_id: str, received_at: dt.datetime
    ) -> PreparedBatch:
        pool = self._pool
        if pool is None or len(body) < self._inline_below:
            return prepare_batch(body, max_events, batch_id, received_at)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, prepare_batch, body, max_events, batch_id, received_at)
        except BrokenProcessPool as exc:
            self._replace(pool)
            raise WorkersUnavailable("an ingest worker process died") from exc

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("spawn"))

    async def _warm(self, pool: ProcessPoolExecutor) -> None:
        """Start every worker and let it import what it needs, before the first batch."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, warm_up) for _ in range(self._processes)))

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is not broken:
            return  # another batch of the same pool got here first
        logger.error("an ingest worker process died; starting the workers again")
        self._pool = self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)
