"""A hole in a partition's offsets is read again until the record comes, or passed after a wait."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from service.core import metrics
from service.log.interface import LogWentBack
from service.log.offset_gaps import OffsetGaps


@dataclass
class Rec:
    offset: int


def recs(*offsets: int) -> list[Rec]:
    return [Rec(o) for o in offsets]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gap_count(outcome: str) -> float:
    return metrics.LOG_OFFSET_GAPS.labels(outcome)._value.get()


def test_contiguous_records_are_handed_on_whole() -> None:
    gaps = OffsetGaps()
    gaps.expect("p0", 10)
    assert gaps.admit("p0", recs(10, 11, 12)) == (recs(10, 11, 12), None)
    assert gaps.admit("p0", recs(13)) == (recs(13), None)


def test_records_after_a_hole_wait_and_the_partition_is_read_again_from_it() -> None:
    gaps = OffsetGaps(wait_seconds=5, clock=Clock())
    filled = gap_count("filled")
    gaps.expect("p0", 688)
    kept, reread = gaps.admit("p0", recs(688, 689, 691, 692))
    assert kept == recs(688, 689) and reread == 690
    # Read again from 690: still not there, then there.
    assert gaps.admit("p0", recs(691, 692)) == ([], 690)
    assert gaps.admit("p0", recs(690, 691, 692)) == (recs(690, 691, 692), None)
    assert gap_count("filled") == filled + 1


def test_a_hole_that_outlives_the_wait_is_passed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    gaps = OffsetGaps(wait_seconds=5, clock=clock)
    passed = gap_count("passed")
    gaps.expect("p0", 0)
    assert gaps.admit("p0", recs(0, 2)) == (recs(0), 1)
    clock.now += 4.9
    assert gaps.admit("p0", recs(2, 3)) == ([], 1)
    clock.now += 0.2
    assert gaps.admit("p0", recs(2, 3)) == (recs(2, 3), None)
    assert gap_count("passed") == passed + 1
    assert "offsets 1..1 never appeared" in caplog.text
    # The next hole is timed afresh.
    assert gaps.admit("p0", recs(5)) == ([], 4)


def test_a_partition_whose_position_is_unknown_trusts_its_first_record() -> None:
    gaps = OffsetGaps()
    assert gaps.admit("p0", recs(500, 501)) == (recs(500, 501), None)
    assert gaps.admit("p0", recs(503)) == ([], 502)
    gaps.forget("p0")  # revoked, or assigned at the group's commit
    assert gaps.admit("p0", recs(900)) == (recs(900), None)


def test_partitions_are_followed_apart() -> None:
    gaps = OffsetGaps()
    gaps.expect("p0", 0)
    gaps.expect("p1", 0)
    assert gaps.admit("p0", recs(1)) == ([], 0)
    assert gaps.admit("p1", recs(0, 1)) == (recs(0, 1), None)


def test_an_offset_below_the_one_expected_means_the_log_lost_what_it_had() -> None:
    gaps = OffsetGaps()
    gaps.expect("p0", 0)
    gaps.admit("p0", recs(0, 1, 2))
    with pytest.raises(LogWentBack, match="offset 0 came after offset 2"):
        gaps.admit("p0", recs(0))
    gaps.expect("p0", 0)  # a seek back is no loss
    assert gaps.admit("p0", recs(0)) == (recs(0), None)
