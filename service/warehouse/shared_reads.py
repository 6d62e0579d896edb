"""Identical reads in flight at once run once, and every caller gets that one answer.

Dashboards poll: a team watching one experiment asks the same aggregate over the same
window many times a second, and on a busy machine each copy competed with ingest for
the same cores. A copy that arrives while the same query (same file, same parameters)
is running waits for it instead of starting another.

What the copy gets is the warehouse as it was when that query started, a moment
before the copy arrived: older by at most one query's time. Ingest is not visible at
once anyway (a 202 becomes visible when the writer inserts it), so no client can tell
the difference; and a caller's own queries one after another are never shared, since
sharing needs both in flight together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from service.core import metrics

_key_encoder = msgspec.json.Encoder(order="sorted")


class SharedReads:
    """Runs each distinct read once at a time; copies in flight together share its answer."""

    def __init__(self) -> None:
        self._running: dict[bytes, asyncio.Task[bytes]] = {}

    async def read(self, name: str, parameters: dict[str, Any], run: Callable[[], Awaitable[bytes]]) -> bytes:
        key = _key_encoder.encode((name, parameters))
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(run())
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        else:
            metrics.SHARED_READS.inc()
        # Shielded: a caller that goes away (its client hung up) does not cancel the
        # read for the copies waiting on it (and shield retrieves a failure nobody awaits).
        return await asyncio.shield(task)

    def __len__(self) -> int:
        """Distinct reads in flight now."""
        return len(self._running)
