"""Records of a partition handed on in offset order with no hole, or a hole waited out first.

A partition's offsets have no holes in our topics: no producer is transactional (the only
source of control records) and nothing is compacted. Yet a broker may show a later batch
before an earlier one: tansu, with several producers on one partition, let a fetch return
offset 691 while 690 was still being stored, and the consumer's position then moved past
690 for good. The writer committed past it and the record was never stored.

So a consumer that sees an offset beyond the one it expects reads the partition again from
the hole (a seek) instead of going on. A hole that is still there after `wait_seconds` is
taken as a real one (a control record of some other, transactional producer) and passed,
with a warning and a count in `crucible_log_offset_gaps_total`.

An offset below the one expected, with no seek between, means the log lost what it had
(`LogWentBack`): the consumer stops rather than take new records for ones it has seen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol, TypeVar

from service.core import metrics
from service.log.interface import LogWentBack

logger = logging.getLogger(__name__)

# The race seen lasts milliseconds; a hole that outlives this is a real one.
HOLE_WAIT_SECONDS = 5.0


class _Offset(Protocol):
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=_Offset)


class OffsetGaps:
    """Per partition, the offset expected next and since when a hole before it is waited on."""

    def __init__(self, wait_seconds: float = HOLE_WAIT_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._wait = wait_seconds
        self._clock = clock
        self._expected: dict[Hashable, int] = {}
        self._hole_since: dict[Hashable, float] = {}

    def expect(self, partition: Hashable, offset: int) -> None:
        """The consumer was moved to `offset` (a seek): the next record must be that one."""
        self._expected[partition] = offset
        self._hole_since.pop(partition, None)

    def forget(self, partition: Hashable) -> None:
        """The partition was revoked, or its position is not known: trust its next record."""
        self._expected.pop(partition, None)
        self._hole_since.pop(partition, None)

    def admit(self, partition: Hashable, records: Sequence[R]) -> tuple[Sequence[R], int | None]:
        """The records to hand on, up to a hole; and the offset to read again from while one is waited on."""
        expected = self._expected.get(partition)
        for index, record in enumerate(records):
            if expected is not None and record.offset < expected:
                raise LogWentBack(f"{partition}: offset {record.offset} came after offset {expected - 1}")
            if expected is not None and record.offset > expected:
                now = self._clock()
                since = self._hole_since.setdefault(partition, now)
                if now - since < self._wait:
                    self._expected[partition] = expected
                    return records[:index], expected
                logger.warning(
                    "%s: offsets %d..%d never appeared in %.0f s; going on after them",
                    partition,
                    expected,
                    record.offset - 1,
                    self._wait,
                )
                metrics.LOG_OFFSET_GAPS.labels("passed").inc()
                del self._hole_since[partition]
            elif partition in self._hole_since:  # the record waited for came
                metrics.LOG_OFFSET_GAPS.labels("filled").inc()
                logger.info("%s: offset %d came %.3f s after a later one", partition, record.offset,
                            self._clock() - self._hole_since.pop(partition))  # fmt: skip
            expected = record.offset + 1
        if expected is not None:
            self._expected[partition] = expected
        return records, None
