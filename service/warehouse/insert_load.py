"""How much of the recent past the warehouse writer spent inserting.

Queries yield to ingest only when ingest is heavy (service/warehouse/client.py). Whether
an insert ran lately says little: a sign-in's one resource event or a live run's few
points per second insert for a few milliseconds, yet the page read next had its queries
niced to one thread for two seconds. The share of a recent window spent inserting tells a
writer under load (66-99 % of it at half load) from one that is not (0.3 % after a sign-in).
"""

from __future__ import annotations

import itertools
import time
from collections import deque


class InsertLoad:
    """The share of the last `window_seconds` during which an insert was running."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._ended: deque[tuple[float, float]] = deque()  # (start, end) of finished inserts, oldest first
        self._running: dict[int, float] = {}  # insert token → its start
        self._tokens = itertools.count()

    def started(self) -> int:
        token = next(self._tokens)
        self._running[token] = time.monotonic()
        return token

    def ended(self, token: int) -> None:
        self._ended.append((self._running.pop(token), time.monotonic()))

    def share(self) -> float:
        now = time.monotonic()
        since = now - self.window_seconds
        while self._ended and self._ended[0][1] <= since:
            self._ended.popleft()
        # Inserts still running count up to now (one waiting for the insert thread too), and
        # time two inserts overlap counts once.
        spans = sorted([*self._ended, *((start, now) for start in self._running.values())])
        inserting, covered_to = 0.0, since
        for start, end in spans:
            if end > covered_to:
                inserting += end - max(start, covered_to)
                covered_to = end
        return min(1.0, inserting / self.window_seconds) if self.window_seconds > 0 else 0.0
