from __future__ import annotations

from service.core.one_time_tokens import OneTimeTokens


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_token_opens_once() -> None:
    tokens: OneTimeTokens[str] = OneTimeTokens(Clock())
    token = tokens.issue("key_1", 60)
    assert tokens.redeem(token) == "key_1"
    assert tokens.redeem(token) is None


def test_a_token_expires() -> None:
    clock = Clock()
    tokens: OneTimeTokens[str] = OneTimeTokens(clock)
    token = tokens.issue("key_1", 60)
    clock.now += 60
    assert tokens.redeem(token) is None


def test_unknown_tokens_open_nothing_and_tokens_differ() -> None:
    tokens: OneTimeTokens[str] = OneTimeTokens(Clock())
    assert tokens.redeem("guess") is None
    assert len({tokens.issue("key_1", 60) for _ in range(100)}) == 100


def test_expired_tokens_are_dropped_when_new_ones_are_issued() -> None:
    clock = Clock()
    tokens: OneTimeTokens[str] = OneTimeTokens(clock)
    for _ in range(10):
        tokens.issue("key_1", 1)
    clock.now += 2
    kept = tokens.issue("key_2", 60)
    assert len(tokens._open) == 1
    assert tokens.redeem(kept) == "key_2"
