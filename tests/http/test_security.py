"""What browsers and proxies add to the attack surface: cross-site requests with the session
cookie, bodies that are not JSON, the Secure cookie behind TLS proxies, and the headers every
answer carries (rate limits even without a valid key, nosniff)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from service.http.appkeys import SETTINGS
from service.http.origins import client_view, origin_allowed
from service.resources.credentials import SESSION_COOKIE
from service.settings import Settings
from tests.keys_support import (
    EXPERIMENTS_URL,
    KEYS_URL,
    RATE_LIMIT_HEADERS,
    SESSIONS_URL,
    auth,
    create_key,
    own_origin,
    session_cookie,
)
from tests.resource_helpers import assert_error, create_experiment, experiment_count

EVIL = "http://evil.example"
TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}
NEW_EXPERIMENT = b'{"experiment": {"name": "from a page"}}'


async def login(anonymous: aiohttp.ClientSession, client: TestClient, secret: str, **headers: str) -> str:
    answer = await anonymous.post(client.make_url(SESSIONS_URL), json={"api_key": secret}, headers=headers)
    assert answer.status == 201, await answer.text()
    return answer.cookies[SESSION_COOKIE].value


def mocked(settings: Settings, headers: dict[str, str], peer: str) -> web.Request:
    app = web.Application()
    app[SETTINGS] = settings

    class Transport:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return (peer, 50000) if name == "peername" else default

    return make_mocked_request("GET", "/", headers=headers, app=app, transport=Transport())


# -- cross-site requests with the session cookie ------------------------------------------------


async def test_a_cross_site_text_plain_post_with_the_cookie_is_403_and_creates_nothing(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    token = await login(anonymous, client, client.secret)
    before = await experiment_count(client)
    headers = {**session_cookie(token), "Origin": EVIL, **TEXT}
    answer = await anonymous.post(client.make_url(EXPERIMENTS_URL), data=NEW_EXPERIMENT, headers=headers)
    error = await assert_error(answer, 403, "forbidden")
    assert "cross-origin" in error["message"] and EVIL in error["message"]
    assert error["details"] == {"Origin": ["is not an origin allowed to use the session cookie"]}
    assert await experiment_count(client) == before


@pytest.mark.parametrize(
    "origin",
    [EVIL, "null", "http://127.0.0.1:1", "https://127.0.0.1"],
    ids=["another site", "an opaque origin", "another port", "another scheme"],
)
async def test_a_cookie_change_from_any_other_origin_is_403(
    client: TestClient, anonymous: aiohttp.ClientSession, origin: str
) -> None:
    token = await login(anonymous, client, client.secret)
    headers = {**session_cookie(token), "Origin": origin}
    answer = await anonymous.post(client.make_url(EXPERIMENTS_URL), data=NEW_EXPERIMENT, headers={**headers, **JSON})
    await assert_error(answer, 403, "forbidden")


async def test_a_sibling_subdomain_is_another_origin(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    token = await login(anonymous, client, client.secret)
    url = client.make_url(EXPERIMENTS_URL)
    host = {**session_cookie(token), "Host": "crucible.example", **JSON}
    sibling = await anonymous.post(url, data=NEW_EXPERIMENT, headers={**host, "Origin": "http://ui.crucible.example"})
    await assert_error(sibling, 403, "forbidden")
    own = await anonymous.post(url, data=NEW_EXPERIMENT, headers={**host, "Origin": "http://crucible.example"})
    assert own.status == 201, await own.text()


async def test_a_cookie_change_from_the_services_own_page_works(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    token = await login(anonymous, client, client.secret)
    url = client.make_url(EXPERIMENTS_URL)
    answer = await anonymous.post(url, data=NEW_EXPERIMENT, headers={**session_cookie(token, client), **JSON})
    assert answer.status == 201, await answer.text()
    referer = {**session_cookie(token), "Referer": own_origin(client) + "/experiments?page=2", **JSON}
    answer = await anonymous.post(url, data=NEW_EXPERIMENT, headers=referer)
    assert answer.status == 201, await answer.text()


async def test_without_origin_the_referer_decides(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    token = await login(anonymous, client, client.secret)
    headers = {**session_cookie(token), "Referer": EVIL + "/attack.html", **JSON}
    answer = await anonymous.post(client.make_url(EXPERIMENTS_URL), data=NEW_EXPERIMENT, headers=headers)
    error = await assert_error(answer, 403, "forbidden")
    assert "Referer" in error["message"]


async def test_a_cookie_change_with_neither_origin_nor_referer_is_403(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    token = await login(anonymous, client, client.secret)
    headers = {**session_cookie(token), **JSON}
    answer = await anonymous.post(client.make_url(EXPERIMENTS_URL), data=NEW_EXPERIMENT, headers=headers)
    error = await assert_error(answer, 403, "forbidden")
    assert "Origin or Referer" in error["message"] and "Bearer" in error["message"]


async def test_every_unsafe_method_with_the_cookie_is_checked(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    experiment = await create_experiment(client)
    token = await login(anonymous, client, client.secret)
    evil = {**session_cookie(token), "Origin": EVIL, **JSON}
    path = client.make_url(f"{EXPERIMENTS_URL}/{experiment['id']}")
    patched = await anonymous.patch(path, data=b'{"experiment": {"name": "renamed"}}', headers=evil)
    await assert_error(patched, 403, "forbidden")
    await assert_error(await anonymous.delete(path, headers=evil), 403, "forbidden")
    upload = client.make_url("/api/v1/runs/run_x/checkpoints/ckpt_1")
    await assert_error(await anonymous.put(upload, data=b"weights", headers=evil), 403, "forbidden")
    # Logging a user out from another site is refused too: the session still works.
    await assert_error(await anonymous.delete(client.make_url(SESSIONS_URL), headers=evil), 403, "forbidden")
    answer = await anonymous.get(path, headers=session_cookie(token))
    assert answer.status == 200
    assert (await answer.json())["data"]["name"] == experiment["name"]


async def test_reads_with_the_cookie_need_no_origin(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    token = await login(anonymous, client, client.secret)
    answer = await anonymous.get(client.make_url(EXPERIMENTS_URL), headers={**session_cookie(token), "Origin": EVIL})
    assert answer.status == 200


async def test_bearer_key_requests_need_no_origin(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    headers = {**auth(client.secret), "Origin": EVIL, **JSON}
    answer = await anonymous.post(client.make_url(EXPERIMENTS_URL), data=NEW_EXPERIMENT, headers=headers)
    assert answer.status == 201, await answer.text()


async def test_an_allowed_origin_may_use_the_cookie(app_client: Any, anonymous: aiohttp.ClientSession) -> None:
    client = await app_client(allowed_origins="http://localhost:5173, https://ui.example")
    token = await login(anonymous, client, client.secret)
    url = client.make_url(EXPERIMENTS_URL)
    for origin in ("http://localhost:5173", "https://UI.example:443"):
        answer = await anonymous.post(
            url, data=NEW_EXPERIMENT, headers={**session_cookie(token), "Origin": origin, **JSON}
        )
        assert answer.status == 201, (origin, await answer.text())
    answer = await anonymous.post(url, data=NEW_EXPERIMENT, headers={**session_cookie(token), "Origin": EVIL, **JSON})
    await assert_error(answer, 403, "forbidden")


async def test_a_login_from_another_sites_page_is_403(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    answer = await anonymous.post(
        client.make_url(SESSIONS_URL), json={"api_key": client.secret}, headers={"Origin": EVIL}
    )
    error = await assert_error(answer, 403, "forbidden")
    assert "login" in error["message"]
    assert SESSION_COOKIE not in answer.cookies
    await login(anonymous, client, client.secret, Origin=own_origin(client))
    await login(anonymous, client, client.secret)  # a script, no page at all


async def test_the_origin_behind_a_trusted_proxy_is_the_one_its_client_used(
    app_client: Any, anonymous: aiohttp.ClientSession
) -> None:
    client = await app_client(trusted_proxies="127.0.0.1/32")
    token = await login(anonymous, client, client.secret)
    proxied = {
        **session_cookie(token),
        "X-Forwarded-Host": "crucible.example",
        "X-Forwarded-Proto": "https",
        "Origin": "https://crucible.example",
        **JSON,
    }
    answer = await anonymous.post(client.make_url(EXPERIMENTS_URL), data=NEW_EXPERIMENT, headers=proxied)
    assert answer.status == 201, await answer.text()


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    token = await login(anonymous, client, client.secret)
    spoofed = {
        **session_cookie(token),
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "http",
        "Origin": EVIL,
        **JSON,
    }
    answer = await anonymous.post(client.make_url(EXPERIMENTS_URL), data=NEW_EXPERIMENT, headers=spoofed)
    await assert_error(answer, 403, "forbidden")


# -- the client as proxies report it -----------------------------------------------------------


def test_forwarded_headers_count_only_from_trusted_proxies(settings: Settings) -> None:
    headers = {"Host": "10.0.0.5:4000", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "crucible.example"}
    headers["X-Forwarded-For"] = "203.0.113.9, 198.51.100.7, 10.0.0.2"
    untrusted = client_view(mocked(settings, headers, "10.0.0.1"))
    assert (untrusted.scheme, untrusted.host, untrusted.address) == ("http", "10.0.0.5:4000", "10.0.0.1")
    trusting = Settings(data_dir=settings.data_dir, trusted_proxies="10.0.0.0/8")
    view = client_view(mocked(trusting, headers, "10.0.0.1"))
    # The last hop that is not a trusted proxy; 203.0.113.9 is only what the client claimed.
    assert (view.scheme, view.host, view.address) == ("https", "crucible.example", "198.51.100.7")


def test_of_several_forwarded_values_the_nearest_proxys_counts(settings: Settings) -> None:
    trusting = Settings(data_dir=settings.data_dir, trusted_proxies="::1, 127.0.0.1")
    headers = {"X-Forwarded-Proto": "http, https", "X-Forwarded-Host": "spoofed.example, crucible.example"}
    view = client_view(mocked(trusting, headers, "::1"))
    assert (view.scheme, view.host) == ("https", "crucible.example")
    bogus = {"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "a b/c", "Host": "own.example"}
    view = client_view(mocked(trusting, bogus, "127.0.0.1"))
    assert (view.scheme, view.host, view.address) == ("http", "own.example", "127.0.0.1")


def test_origins_compare_by_scheme_host_and_port(settings: Settings) -> None:
    request = mocked(settings, {"Host": "Crucible.Example"}, "127.0.0.1")
    assert origin_allowed(request, "http://crucible.example:80")
    assert origin_allowed(request, "http://crucible.example/some/page?x=1")
    assert not origin_allowed(request, "http://crucible.example:8080")
    assert not origin_allowed(request, "https://crucible.example")
    assert not origin_allowed(request, "http://crucible.example.evil.example")
    assert not origin_allowed(request, "null")
    assert not origin_allowed(request, "http://[::1")


# -- the Secure cookie -------------------------------------------------------------------------


async def login_answer(anonymous: aiohttp.ClientSession, client: TestClient, **headers: str) -> aiohttp.ClientResponse:
    answer = await anonymous.post(client.make_url(SESSIONS_URL), json={"api_key": client.secret}, headers=headers)
    assert answer.status == 201, await answer.text()
    return answer


async def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(
    app_client: Any, anonymous: aiohttp.ClientSession
) -> None:
    client = await app_client(trusted_proxies="127.0.0.1")
    answer = await login_answer(anonymous, client, **{"X-Forwarded-Proto": "https"})
    assert answer.cookies[SESSION_COOKIE]["secure"]
    assert "Secure" in answer.headers["Set-Cookie"]
    token = answer.cookies[SESSION_COOKIE].value
    headers = {**session_cookie(token), "Origin": "https://127.0.0.1:" + str(client.port), "X-Forwarded-Proto": "https"}
    logout = await anonymous.delete(client.make_url(SESSIONS_URL), headers=headers)
    assert logout.status == 204, await logout.text()
    assert "Secure" in logout.headers["Set-Cookie"]  # the deletion matches the cookie it replaces


async def test_the_cookie_is_not_secure_over_plain_http(app_client: Any, anonymous: aiohttp.ClientSession) -> None:
    client = await app_client(trusted_proxies="127.0.0.1")
    answer = await login_answer(anonymous, client)
    assert not answer.cookies[SESSION_COOKIE]["secure"]
    assert "Secure" not in answer.headers["Set-Cookie"]


@pytest.mark.parametrize("trusted", [None, "10.0.0.0/8"], ids=["no proxies", "other proxies"])
async def test_an_untrusted_x_forwarded_proto_does_not_make_the_cookie_secure(
    app_client: Any, anonymous: aiohttp.ClientSession, trusted: str | None
) -> None:
    client = await app_client(trusted_proxies=trusted)
    answer = await login_answer(anonymous, client, **{"X-Forwarded-Proto": "https"})
    assert "Secure" not in answer.headers["Set-Cookie"]


# -- headers on every answer --------------------------------------------------------------------


def assert_rate_limited_headers(answer: aiohttp.ClientResponse, limit: int | None = None) -> dict[str, int]:
    values = {name: int(answer.headers[name]) for name in RATE_LIMIT_HEADERS}
    if limit is not None:
        assert values["X-RateLimit-Limit"] == limit
    return values


async def test_a_401_carries_the_rate_limit_of_its_client_address(
    app_client: Any, anonymous: aiohttp.ClientSession
) -> None:
    client = await app_client(unauthenticated_rate_limit=3)
    url = client.make_url(EXPERIMENTS_URL)
    remaining = []
    for headers in ({}, auth("crucible.key_0000000000000000.nope"), {"Authorization": "Basic x"}):
        answer = await anonymous.get(url, headers=headers)
        await assert_error(answer, 401, "unauthorized")
        remaining.append(assert_rated(answer, 3))
    assert remaining == [2, 1, 0]
    answer = await anonymous.get(url)
    error = await assert_error(answer, 429, "rate_limited")
    assert "unauthenticated" in error["message"]
    assert int(answer.headers["Retry-After"]) >= 1
    assert (await client.get(EXPERIMENTS_URL)).status == 200  # a valid key is not held back by it


def assert_rated(answer: aiohttp.ClientResponse, limit: int) -> int:
    return assert_rate_limited_headers(answer, limit)["X-RateLimit-Remaining"]


async def test_logins_count_against_the_client_address(app_client: Any, anonymous: aiohttp.ClientSession) -> None:
    client = await app_client(unauthenticated_rate_limit=2)
    url = client.make_url(SESSIONS_URL)
    bad = await anonymous.post(url, json={"api_key": "crucible.key_0000000000000000.nope"})
    await assert_error(bad, 401, "unauthorized")
    assert assert_rated(bad, 2) == 1
    good = await anonymous.post(url, json={"api_key": client.secret})
    assert good.status == 201
    assert assert_rated(good, 2) == 0
    await assert_error(await anonymous.post(url, json={"api_key": client.secret}), 429, "rate_limited")


async def test_client_addresses_behind_a_trusted_proxy_are_counted_apart(
    app_client: Any, anonymous: aiohttp.ClientSession
) -> None:
    client = await app_client(unauthenticated_rate_limit=5, trusted_proxies="127.0.0.1")
    url = client.make_url(EXPERIMENTS_URL)
    first = await anonymous.get(url, headers={"X-Forwarded-For": "198.51.100.1"})
    second = await anonymous.get(url, headers={"X-Forwarded-For": "198.51.100.2"})
    assert assert_rated(first, 5) == assert_rated(second, 5) == 4


async def test_a_403_for_a_missing_scope_carries_the_keys_rate_limit(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    reader = await create_key(client, "read", write=7)
    answer = await anonymous.post(
        client.make_url(EXPERIMENTS_URL), json={"experiment": {"name": "x"}}, headers=auth(reader["secret"])
    )
    await assert_error(answer, 403, "forbidden")
    assert assert_rated(answer, 7) == 6


async def test_a_403_for_a_cross_site_cookie_carries_a_rate_limit(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    token = await login(anonymous, client, client.secret)
    headers = {**session_cookie(token), "Origin": EVIL, **JSON}
    answer = await anonymous.post(client.make_url(EXPERIMENTS_URL), data=NEW_EXPERIMENT, headers=headers)
    await assert_error(answer, 403, "forbidden")
    assert_rate_limited_headers(answer, client.app[SETTINGS].unauthenticated_rate_limit)


async def test_every_kind_of_answer_says_nosniff(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    answers = [
        await client.get(EXPERIMENTS_URL),  # JSON
        await client.post(EXPERIMENTS_URL, data=b"{", headers=JSON),  # an error
        await client.get("/api/v1/no-such-route"),  # aiohttp's own 404
        await anonymous.get(client.make_url(EXPERIMENTS_URL)),  # 401
        await anonymous.get(client.make_url("/socket/websocket?vsn=2.0.0")),  # a refused upgrade
        await anonymous.get(client.make_url("/healthz")),
        await client.get(KEYS_URL),
    ]
    for answer in answers:
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", (answer.url, answer.status)
    async with client.get("/api/v1/telemetry/stream") as stream:  # Server-Sent Events
        assert stream.status == 200
        assert stream.headers.get("X-Content-Type-Options") == "nosniff"
    ws = await client.ws_connect("/socket/websocket?vsn=2.0.0")
    await ws.close()
