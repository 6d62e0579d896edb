"""Per-key rate limits by endpoint class, in fixed one-minute windows.

Windows are aligned to the minute, so `X-RateLimit-Reset` is the same instant for
every request of a window and a client can sleep until it. Counts live in this
process: with N API replicas behind a balancer a key gets up to N times its limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60
LIMIT_CLASSES = ("read", "write", "ingest", "export")


@dataclass(frozen=True, slots=True)
class Quota:
    """The answer of one check, as the X-RateLimit-* headers say it."""

    limit: int
    remaining: int
    reset: int  # Unix seconds when the window ends
    allowed: bool
    retry_after: int  # seconds; 0 when allowed

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], tuple[int, int]] = {}  # (key, class) → (window start, used)
        self._pruned_window = 0

    def take(self, key_id: str, limit_class: str, limit: int, amount: int = 1) -> Quota:
        """Count `amount` against the key's limit, or nothing at all if it would go over."""
        now = self._clock()
        window = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
        if window != self._pruned_window:
            self._prune(window)
        start, used = self._windows.get((key_id, limit_class), (window, 0))
        if start != window:
            used = 0
        reset = window + WINDOW_SECONDS
        allowed = used + amount <= limit
        if allowed:
            used += amount
            self._windows[(key_id, limit_class)] = (window, used)
        retry_after = 0 if allowed else max(math.ceil(reset - now), 1)
        return Quota(limit, max(limit - used, 0), reset, allowed, retry_after)

    def _prune(self, window: int) -> None:
        """Drop counts of past windows so idle keys cost no memory."""
        self._pruned_window = window
        self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
