"""Tokens that each open one thing once, within minutes: the sign-in link `crucible serve` prints.

They live in the memory of the process that made them: a link works on that process only,
and a restart forgets every link (the new process prints a new one).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class OneTimeTokens(Generic[T]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._open: dict[str, tuple[T, float]] = {}

    def issue(self, value: T, ttl_seconds: float) -> str:
        """A new token for `value`, good for one `redeem` within `ttl_seconds`."""
        self._drop_expired()
        token = secrets.token_urlsafe(32)
        self._open[token] = (value, self._clock() + ttl_seconds)
        return token

    def redeem(self, token: str) -> T | None:
        """The value of an open token, which is spent by this call; None if unknown, spent or expired.

        One dict.pop with no await around it: of many requests carrying the token at once,
        exactly one gets the value."""
        value, expires = self._open.pop(token, (None, 0.0))
        if value is None or self._clock() >= expires:
            return None
        return value

    def _drop_expired(self) -> None:
        now = self._clock()
        for token in [token for token, (_, expires) in self._open.items() if now >= expires]:
            del self._open[token]
