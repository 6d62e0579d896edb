"""One asyncio lock per key: the single-flight rule for everything remembered by key.

An answer remembered by key (an Idempotency-Key, a checkpoint id, an export job's
key) is only safe if looking it up and acting on it happen as one step. Any
`await` between the two lets a concurrent copy of the request pass the same
check, so each such check-then-act runs under the key's lock: the first copy
acts, the others wait and then find its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


class KeyedLocks:
    """One asyncio lock per key, forgotten once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._locks)
