"""Counters of what the client did with the events it was given."""

from __future__ import annotations

import dataclasses
import threading


@dataclasses.dataclass(slots=True)
class ClientStats:
    batched: int = 0  # events made into batches
    accepted: int = 0  # events the server acknowledged as stored
    rejected: int = 0  # events the server refused (not retried)
    rejected_batches: int = 0  # batches refused whole: 400, 404, 413, 422...
    dropped: int = 0  # events left out on this side: not encodable as JSON, or the spool failed
    spooled: int = 0  # events written to the spool
    retries: int = 0  # attempts that failed and were tried again
    checkpoints: int = 0  # checkpoint files uploaded
    checkpoint_failures: int = 0
    # Several threads count (senders, batcher, uploads); never taken on the logging path.
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def count(self, **increments: int) -> None:
        """Add to counters by name: `stats.count(accepted=1000, rejected=2)`."""
        with self._lock:
            for name, increment in increments.items():
                setattr(self, name, getattr(self, name) + increment)

    def snapshot(self) -> ClientStats:
        with self._lock:
            return dataclasses.replace(self)
