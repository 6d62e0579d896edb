"""Rate limits per key and endpoint class: the RateLimiter on a fake clock, then the API's answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.core.ratelimit import WINDOW_SECONDS, RateLimiter
from service.resources.credentials import SESSION_COOKIE
from tests.keys_support import (
    EVENTS_URL,
    EXPERIMENTS_URL,
    KEYS_URL,
    RATE_LIMIT_HEADERS,
    SESSIONS_URL,
    auth,
    batch,
    create_key,
    event,
    session_cookie,
    settled_events,
)

WINDOW_START = 1_700_000_040.0  # a multiple of 60: the start of a window


class FakeClock:
    def __init__(self, now: float = WINDOW_START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- RateLimiter -----------------------------------------------------------------------------


def test_counts_up_to_the_limit_then_refuses() -> None:
    limiter = RateLimiter(FakeClock())
    remaining = [limiter.take("key_a", "read", 3).remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    refused = limiter.take("key_a", "read", 3)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.limit == 3


def test_a_refusal_counts_nothing() -> None:
    limiter = RateLimiter(FakeClock())
    assert limiter.take("key_a", "ingest", 10, amount=8).allowed
    refused = limiter.take("key_a", "ingest", 10, amount=5)
    assert not refused.allowed
    assert refused.remaining == 2  # the refused 5 were not taken
    assert limiter.take("key_a", "ingest", 10, amount=2).allowed
    assert limiter.take("key_a", "ingest", 10, amount=1).allowed is False


def test_an_amount_over_the_whole_limit_is_refused_in_a_fresh_window() -> None:
    limiter = RateLimiter(FakeClock())
    assert not limiter.take("key_a", "ingest", 5, amount=6).allowed
    assert limiter.take("key_a", "ingest", 5, amount=5).allowed


def test_taking_nothing_is_always_allowed_and_counts_nothing() -> None:
    limiter = RateLimiter(FakeClock())
    assert limiter.take("key_a", "ingest", 2, amount=2).allowed
    quota = limiter.take("key_a", "ingest", 2, amount=0)
    assert quota.allowed
    assert quota.remaining == 0


def test_the_reset_is_the_end_of_the_minute_window() -> None:
    clock = FakeClock(WINDOW_START + 15.5)
    limiter = RateLimiter(clock)
    assert limiter.take("key_a", "read", 1).reset == WINDOW_START + WINDOW_SECONDS
    refused = limiter.take("key_a", "read", 1)
    assert refused.reset == WINDOW_START + WINDOW_SECONDS
    assert refused.retry_after == 45  # 44.5 s left, rounded up


def test_retry_after_is_at_least_one_second() -> None:
    clock = FakeClock(WINDOW_START + WINDOW_SECONDS - 0.2)
    limiter = RateLimiter(clock)
    limiter.take("key_a", "read", 1)
    assert limiter.take("key_a", "read", 1).retry_after == 1


def test_the_count_starts_again_in_the_next_window() -> None:
    clock = FakeClock(WINDOW_START + 59.0)
    limiter = RateLimiter(clock)
    assert limiter.take("key_a", "write", 2, amount=2).allowed
    assert not limiter.take("key_a", "write", 2).allowed
    clock.now = WINDOW_START + WINDOW_SECONDS  # the next minute begins
    quota = limiter.take("key_a", "write", 2)
    assert quota.allowed
    assert quota.remaining == 1
    assert quota.reset == WINDOW_START + 2 * WINDOW_SECONDS


def test_a_key_idle_for_several_windows_starts_afresh() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    limiter.take("key_a", "read", 5, amount=5)
    clock.now += 10 * WINDOW_SECONDS
    limiter.take("key_b", "read", 5)  # another key's request in between
    assert limiter.take("key_a", "read", 5).remaining == 4


def test_keys_and_classes_are_counted_apart() -> None:
    limiter = RateLimiter(FakeClock())
    assert limiter.take("key_a", "read", 1).allowed
    assert not limiter.take("key_a", "read", 1).allowed
    assert limiter.take("key_b", "read", 1).allowed
    assert limiter.take("key_a", "write", 1).allowed


def test_the_headers_of_an_allowed_and_a_refused_quota() -> None:
    limiter = RateLimiter(FakeClock(WINDOW_START + 30.0))
    allowed = limiter.take("key_a", "read", 1).headers()
    assert allowed == {
        "X-RateLimit-Limit": "1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(WINDOW_START) + WINDOW_SECONDS),
    }
    refused = limiter.take("key_a", "read", 1).headers()
    assert refused == {**allowed, "Retry-After": "30"}


# -- the API ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def steady_window(request: pytest.FixtureRequest) -> None:
    """Windows are whole minutes: an API test starts well inside one, so its counts never reset midway."""
    if "client" not in request.fixturenames and "app_client" not in request.fixturenames:
        return
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < 5:
        await asyncio.sleep(left + 0.1)


def quota_headers(answer: Any) -> dict[str, int]:
    missing = [name for name in RATE_LIMIT_HEADERS if name not in answer.headers]
    assert not missing, f"{answer.status} answer without {missing}"
    return {name: int(answer.headers[name]) for name in RATE_LIMIT_HEADERS}


async def assert_rate_limited(answer: Any) -> dict[str, Any]:
    assert answer.status == 429, await answer.text()
    error: dict[str, Any] = (await answer.json())["error"]
    assert error["code"] == "rate_limited"
    retry_after = int(answer.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_SECONDS
    quota_headers(answer)
    return error


async def test_a_new_key_has_the_default_limits_of_api_md(client: TestClient) -> None:
    key = await create_key(client, "read")
    assert key["rate_limits"] == {"read": 1000, "write": 100, "ingest": 10000, "export": 10}


async def test_limits_given_at_creation_are_kept(client: TestClient) -> None:
    key = await create_key(client, "read", read=5, export=2)
    assert key["rate_limits"] == {"read": 5, "write": 100, "ingest": 10000, "export": 2}
    got = await (await client.get(f"{KEYS_URL}/{key['id']}")).json()
    assert got["data"]["rate_limits"] == key["rate_limits"]


async def test_a_read_answer_says_where_the_read_limit_stands(client: TestClient) -> None:
    key = await create_key(client, "read")
    answer = await client.get(EXPERIMENTS_URL, headers=auth(key["secret"]))
    assert answer.status == 200
    quota = quota_headers(answer)
    assert quota["X-RateLimit-Limit"] == 1000
    assert quota["X-RateLimit-Remaining"] == 999
    reset = quota["X-RateLimit-Reset"]
    assert reset % WINDOW_SECONDS == 0
    assert time.time() < reset <= time.time() + WINDOW_SECONDS
    assert "Retry-After" not in answer.headers


async def test_a_write_answer_says_where_the_write_limit_stands(client: TestClient) -> None:
    key = await create_key(client, "write")
    answer = await client.post(EXPERIMENTS_URL, json={"experiment": {"name": "e"}}, headers=auth(key["secret"]))
    assert answer.status == 201
    quota = quota_headers(answer)
    assert (quota["X-RateLimit-Limit"], quota["X-RateLimit-Remaining"]) == (100, 99)


async def test_an_ingest_answer_counts_events(client: TestClient) -> None:
    key = await create_key(client, "ingest")
    answer = await client.post(EVENTS_URL, json=batch(3), headers=auth(key["secret"]))
    assert answer.status == 202
    quota = quota_headers(answer)
    assert (quota["X-RateLimit-Limit"], quota["X-RateLimit-Remaining"]) == (10000, 9997)


async def test_remaining_goes_down_with_each_request(client: TestClient) -> None:
    key = await create_key(client, "read", read=10)
    remaining = []
    for _ in range(3):
        answer = await client.get(EXPERIMENTS_URL, headers=auth(key["secret"]))
        remaining.append(quota_headers(answer)["X-RateLimit-Remaining"])
    assert remaining == [9, 8, 7]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", f"{EXPERIMENTS_URL}/exp_missing", None, 404),
        ("GET", f"{EXPERIMENTS_URL}?no_such_parameter=1", None, 422),
        ("POST", EXPERIMENTS_URL, {"experiment": {}}, 422),
        ("PATCH", f"{EXPERIMENTS_URL}/exp_missing", {"experiment": {"name": "x"}}, 404),
        ("POST", EVENTS_URL, {"events": [event(event_name=[])]}, 422),
        ("POST", EVENTS_URL, {"events": []}, 422),
    ],
)
async def test_error_answers_carry_the_rate_limit_headers(
    client: TestClient, method: str, path: str, body: Any, status: int
) -> None:
    key = await create_key(client, "read", "write", "ingest")
    answer = await client.request(method, path, json=body, headers=auth(key["secret"]))
    assert answer.status == status, await answer.text()
    quota_headers(answer)


async def test_a_malformed_ingest_body_carries_the_rate_limit_headers(client: TestClient) -> None:
    key = await create_key(client, "ingest")
    headers = {**auth(key["secret"]), "Content-Type": "application/json"}
    answer = await client.post(EVENTS_URL, data=b'{"events": [', headers=headers)
    assert answer.status == 400
    assert quota_headers(answer)["X-RateLimit-Limit"] == 10000


async def session_get(client: TestClient, token: str, path: str) -> Any:
    """GET with nothing but the session cookie (the `client` would add its admin key)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anonymous:
        answer = await anonymous.get(client.make_url(path), headers=session_cookie(token))
        await answer.read()
        return answer


async def session_of(client: TestClient, secret: str) -> str:
    login = await client.post(SESSIONS_URL, json={"api_key": secret})
    assert login.status == 201
    return str(login.cookies[SESSION_COOKIE].value)


async def test_a_session_answer_carries_the_headers_of_its_key(client: TestClient) -> None:
    key = await create_key(client, "read", read=7)
    answer = await session_get(client, await session_of(client, key["secret"]), EXPERIMENTS_URL)
    assert answer.status == 200
    assert quota_headers(answer)["X-RateLimit-Limit"] == 7


async def test_over_the_read_limit_is_429_rate_limited(client: TestClient) -> None:
    key = await create_key(client, "read", read=3)
    for _ in range(3):
        assert (await client.get(EXPERIMENTS_URL, headers=auth(key["secret"]))).status == 200
    answer = await client.get(EXPERIMENTS_URL, headers=auth(key["secret"]))
    error = await assert_rate_limited(answer)
    assert "read" in error["details"]
    assert quota_headers(answer)["X-RateLimit-Remaining"] == 0
    reset = quota_headers(answer)["X-RateLimit-Reset"]
    assert int(answer.headers["Retry-After"]) == pytest.approx(reset - time.time(), abs=2)


async def test_a_refused_write_changes_nothing(client: TestClient) -> None:
    key = await create_key(client, "write", write=2)
    for name in ("first", "second"):
        answer = await client.post(EXPERIMENTS_URL, json={"experiment": {"name": name}}, headers=auth(key["secret"]))
        assert answer.status == 201
    answer = await client.post(EXPERIMENTS_URL, json={"experiment": {"name": "third"}}, headers=auth(key["secret"]))
    await assert_rate_limited(answer)
    names = [e["name"] for e in (await (await client.get(EXPERIMENTS_URL)).json())["data"]]
    assert sorted(names) == ["first", "second"]


async def test_each_class_has_its_own_count(client: TestClient) -> None:
    key = await create_key(client, "read", "write", read=1, write=1)
    assert (await client.get(EXPERIMENTS_URL, headers=auth(key["secret"]))).status == 200
    await assert_rate_limited(await client.get(EXPERIMENTS_URL, headers=auth(key["secret"])))
    answer = await client.post(EXPERIMENTS_URL, json={"experiment": {"name": "e"}}, headers=auth(key["secret"]))
    assert answer.status == 201


async def test_each_key_has_its_own_count(client: TestClient) -> None:
    spent = await create_key(client, "read", read=1)
    fresh = await create_key(client, "read", read=1)
    assert (await client.get(EXPERIMENTS_URL, headers=auth(spent["secret"]))).status == 200
    await assert_rate_limited(await client.get(EXPERIMENTS_URL, headers=auth(spent["secret"])))
    assert (await client.get(EXPERIMENTS_URL, headers=auth(fresh["secret"]))).status == 200


async def test_a_session_and_its_key_share_one_count(client: TestClient) -> None:
    key = await create_key(client, "read", read=2)
    token = await session_of(client, key["secret"])
    assert (await client.get(EXPERIMENTS_URL, headers=auth(key["secret"]))).status == 200
    assert (await session_get(client, token, EXPERIMENTS_URL)).status == 200
    await assert_rate_limited(await client.get(EXPERIMENTS_URL, headers=auth(key["secret"])))


async def test_an_ingest_batch_over_the_limit_is_refused_whole(client: TestClient) -> None:
    key = await create_key(client, "ingest", ingest=5)
    first = await client.post(EVENTS_URL, json=batch(3), headers=auth(key["secret"]))
    assert first.status == 202
    assert quota_headers(first)["X-RateLimit-Remaining"] == 2
    over = await client.post(EVENTS_URL, json=batch(3), headers=auth(key["secret"]))
    error = await assert_rate_limited(over)
    assert "ingest" in error["details"]
    assert quota_headers(over)["X-RateLimit-Remaining"] == 2  # what is left, unspent
    assert await settled_events(client, "exp_rate") == 3  # none of the refused 3 was appended


async def test_a_refused_ingest_batch_counts_nothing(client: TestClient) -> None:
    key = await create_key(client, "ingest", ingest=5)
    assert (await client.post(EVENTS_URL, json=batch(3), headers=auth(key["secret"]))).status == 202
    await assert_rate_limited(await client.post(EVENTS_URL, json=batch(3), headers=auth(key["secret"])))
    last = await client.post(EVENTS_URL, json=batch(2), headers=auth(key["secret"]))
    assert last.status == 202
    assert quota_headers(last)["X-RateLimit-Remaining"] == 0
    assert await settled_events(client, "exp_rate") == 5


async def test_only_valid_events_of_a_batch_are_counted(client: TestClient) -> None:
    key = await create_key(client, "ingest", ingest=5)
    mixed = {"events": [event(), event(event_name=[]), event()]}
    answer = await client.post(EVENTS_URL, json=mixed, headers=auth(key["secret"]))
    assert answer.status == 202
    assert (await answer.json())["data"]["accepted"] == 2
    assert quota_headers(answer)["X-RateLimit-Remaining"] == 3


async def test_a_replayed_ingest_is_not_counted_again(client: TestClient) -> None:
    key = await create_key(client, "ingest", ingest=4)
    headers = {**auth(key["secret"]), "Idempotency-Key": "batch-1"}
    first = await client.post(EVENTS_URL, json=batch(3), headers=headers)
    assert first.status == 202
    replay = await client.post(EVENTS_URL, json=batch(3), headers=headers)
    assert replay.status == 202
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert quota_headers(replay)["X-RateLimit-Remaining"] == 1
    assert (await client.post(EVENTS_URL, json=batch(1), headers=auth(key["secret"]))).status == 202
    assert await settled_events(client, "exp_rate") == 4


async def test_a_replayed_ingest_is_answered_when_the_limit_is_spent(client: TestClient) -> None:
    key = await create_key(client, "ingest", ingest=3)
    headers = {**auth(key["secret"]), "Idempotency-Key": "batch-1"}
    assert (await client.post(EVENTS_URL, json=batch(3), headers=headers)).status == 202
    await assert_rate_limited(await client.post(EVENTS_URL, json=batch(1), headers=auth(key["secret"])))
    replay = await client.post(EVENTS_URL, json=batch(3), headers=headers)
    assert replay.status == 202
    assert replay.headers.get("Idempotent-Replayed") == "true"


async def test_a_refused_batch_is_not_remembered_under_its_idempotency_key(client: TestClient) -> None:
    key = await create_key(client, "ingest", ingest=3)
    assert (await client.post(EVENTS_URL, json=batch(2), headers=auth(key["secret"]))).status == 202
    headers = {**auth(key["secret"]), "Idempotency-Key": "batch-2"}
    await assert_rate_limited(await client.post(EVENTS_URL, json=batch(2), headers=headers))
    retry = await client.post(EVENTS_URL, json=batch(2), headers=headers)
    await assert_rate_limited(retry)  # checked again, not replayed as accepted
    assert "Idempotent-Replayed" not in retry.headers
    assert await settled_events(client, "exp_rate") == 2


async def test_reading_keys_counts_against_the_read_limit(client: TestClient) -> None:
    admin = await create_key(client, "admin", read=1000, write=1)
    for _ in range(2):
        answer = await client.get(KEYS_URL, headers=auth(admin["secret"]))
        assert answer.status == 200, await answer.text()
        assert quota_headers(answer)["X-RateLimit-Limit"] == 1000
