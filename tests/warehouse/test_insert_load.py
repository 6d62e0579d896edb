"""The share of a recent window the writer spent inserting (service/warehouse/insert_load.py),
on a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest

from service.warehouse import insert_load
from service.warehouse.insert_load import InsertLoad


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: Any) -> Clock:
    clock = Clock()
    monkeypatch.setattr(insert_load.time, "monotonic", clock)
    return clock


def insert(load: InsertLoad, clock: Clock, seconds: float) -> None:
    token = load.started()
    clock.now += seconds
    load.ended(token)


def test_no_insert_is_no_load(clock: Clock) -> None:
    assert InsertLoad(2.0).share() == 0.0


def test_the_share_of_the_window_spent_inserting(clock: Clock) -> None:
    load = InsertLoad(2.0)
    insert(load, clock, 0.5)
    clock.now += 0.5
    insert(load, clock, 0.25)
    assert load.share() == pytest.approx(0.375)


def test_an_insert_still_running_counts_up_to_now(clock: Clock) -> None:
    load = InsertLoad(2.0)
    load.started()
    clock.now += 1.5
    assert load.share() == pytest.approx(0.75)
    clock.now += 10
    assert load.share() == 1.0


def test_only_the_part_inside_the_window_counts(clock: Clock) -> None:
    load = InsertLoad(2.0)
    insert(load, clock, 1.0)
    clock.now += 1.5  # the insert's last 0.5 s are in the window
    assert load.share() == pytest.approx(0.25)
    clock.now += 1.0
    assert load.share() == 0.0


def test_time_two_inserts_overlap_counts_once(clock: Clock) -> None:
    load = InsertLoad(2.0)
    first = load.started()
    clock.now += 0.5
    second = load.started()
    clock.now += 0.5
    load.ended(first)
    clock.now += 0.5
    load.ended(second)
    assert load.share() == pytest.approx(0.75)
