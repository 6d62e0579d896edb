"""The writer's window of retryable records: what it drops, and what it forgets when."""

from __future__ import annotations

from service.warehouse.retry_window import RetryWindow

HOUR_MS = 3_600_000


def test_a_pair_is_new_once_and_each_key_of_a_batch_counts_apart() -> None:
    window = RetryWindow(ttl_seconds=3600, max_pairs=100)
    assert window.first_time(b"b1", b"exp_a", 1_000)
    assert window.first_time(b"b1", b"exp_b", 1_000)  # the same batch's record for another experiment
    assert not window.first_time(b"b1", b"exp_a", 2_000)
    assert not window.first_time(b"b1", b"exp_b", 2_000)
    assert window.first_time(b"b2", b"exp_a", 2_000)
    assert len(window) == 3


def test_a_pair_is_forgotten_once_the_partition_is_a_ttl_further() -> None:
    window = RetryWindow(ttl_seconds=3600, max_pairs=100)
    assert window.first_time(b"b1", b"k", 0)
    assert window.first_time(b"b2", b"k", HOUR_MS)  # exactly one TTL later: b1 is still kept
    assert not window.first_time(b"b1", b"k", HOUR_MS)
    assert window.first_time(b"b3", b"k", HOUR_MS + 1)
    assert window.first_time(b"b1", b"k", HOUR_MS + 1)  # forgotten: stored again, as the API would
    # An older record (another API process's clock) does not move the window back.
    assert not window.first_time(b"b3", b"k", 5)


def test_the_oldest_pairs_go_first_beyond_the_size_bound() -> None:
    window = RetryWindow(ttl_seconds=3600, max_pairs=3)
    for n in range(5):
        assert window.first_time(b"b%d" % n, b"k", n)
    assert len(window) == 3
    assert window.first_time(b"b0", b"k", 5)
    assert not window.first_time(b"b4", b"k", 6)
