"""The writer's memory of one partition's retryable records, to store a retried batch once.

On Kafka, the API process that appended a batch is the only one that remembers its
Idempotency-Key's answer (service/log/kafka.py). A retry reaching another API process,
or the same one restarted between its append and its answer, is appended again. Both
copies carry the same batch id (derived from the key, service/ingest/ingestor.py) in the
`batch-id` header and the same record key (experiment_id), so they land on the same
partition, whose records one writer at a time inserts in log order. That writer drops
a record whose (batch id, key) it has seen before: the first copy in the log is stored,
every later one, in the same insert or any later one, is not.

A batch of several experiments is several records, one per experiment, so the window
holds (batch id, key) pairs: each record of a retry is matched with the same record of
the first attempt.

The window is bounded twice, whichever comes first:

- in time: a pair is forgotten once the partition's newest record is more than
  `idempotency_ttl_seconds` younger than it, the time for which an API process
  remembers an answer too (times are the log records' timestamps, when they were
  appended, so a writer that lags judges them as the API processes did);
- in size: at most `writer_retry_window` pairs per partition (oldest forgotten first),
  so that a writer's memory stays bounded at any ingest rate.

The warehouse keeps a row per retryable record it stores (`telemetry_batches`, written
by a materialized view in the same insert as the events), and a writer taking over a
partition after a rebalance or a restart rebuilds the window from the latest rows
(queries/writer_retry_window.sql) before it reads any record.
"""

from __future__ import annotations

from collections import OrderedDict

RetryKey = tuple[bytes, bytes]  # (batch id, record key)


class RetryWindow:
    """The (batch id, record key) pairs of a partition stored lately, oldest first."""

    def __init__(self, ttl_seconds: float, max_pairs: int) -> None:
        self._ttl_ms = int(ttl_seconds * 1000)
        self._max_pairs = max_pairs
        # OrderedDict rather than dict: forgetting the oldest is O(1) (a dict's
        # `next(iter(...))` walks over every entry deleted before it).
        self._seen: OrderedDict[RetryKey, int] = OrderedDict()
        self._newest_ms = 0

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, batch_id: bytes, key: bytes, at_ms: int) -> bool:
        """Whether this is the first record of (batch id, key) in the window; remembers it if so."""
        pair = (batch_id, key)
        if pair in self._seen:
            return False
        self._seen[pair] = at_ms
        if at_ms > self._newest_ms:
            self._newest_ms = at_ms
        self._forget_old()
        return True

    def _forget_old(self) -> None:
        seen = self._seen
        while len(seen) > self._max_pairs:
            seen.popitem(last=False)
        oldest_kept = self._newest_ms - self._ttl_ms
        while seen and next(iter(seen.values())) < oldest_kept:
            seen.popitem(last=False)
