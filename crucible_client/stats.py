"""Counters of what the client did with the events it was given."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(slots=True)
class ClientStats:
    """Each counter is written by one of the client's threads only, so none needs a lock."""

    batched: int = 0  # events made into batches
    accepted: int = 0  # events the server acknowledged as stored
    rejected: int = 0  # events the server refused (not retried)
    rejected_batches: int = 0  # batches refused whole: 400, 404, 413, 422...
    dropped: int = 0  # events left out on this side: not encodable as JSON, or the spool failed
    spooled: int = 0  # events written to the spool
    retries: int = 0  # attempts that failed and were tried again
    checkpoints: int = 0  # checkpoint files uploaded
    checkpoint_failures: int = 0

    def snapshot(self) -> ClientStats:
        return dataclasses.replace(self)
