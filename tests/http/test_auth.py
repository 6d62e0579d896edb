"""Authentication and scopes: Bearer API keys, session cookies, and the route table's declarations."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from service.http.appkeys import SETTINGS
from service.http.auth import check_routes, public, requires
from service.resources.credentials import SESSION_COOKIE
from service.ui.pages import PAGE_PATHS
from service.ui.sign_in_link import SIGN_IN_LINK_PATH
from tests.keys_support import (
    EVENTS_URL,
    EXPERIMENTS_URL,
    KEYS_URL,
    SESSIONS_URL,
    auth,
    batch,
    create_key,
    session_cookie,
)
from tests.resource_helpers import assert_error

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics"}
# The web UI's pages and files hold no data (each page asks the API as the signed-in browser).
UI_PATHS = {*PAGE_PATHS, "/ui/vendor/{name}", "/ui/{name}", SIGN_IN_LINK_PATH}


def group_patterns(pattern: str) -> dict[str, str]:
    """The sub-pattern of each named group `(?P<name>...)` of a route's regex."""
    found = {}
    for match in re.finditer(r"\(\?P<(\w+)>", pattern):
        depth, end = 1, match.end()
        while depth:
            if pattern[end] == "\\":
                end += 2
                continue
            depth += {"(": 1, ")": -1}.get(pattern[end], 0)
            end += 1
        found[match.group(1)] = pattern[match.end() : end - 1]
    return found


def concrete_path(resource: web.AbstractResource) -> str:
    """The resource's path with a dummy value for each parameter that its pattern accepts."""
    info = resource.get_info()
    if "path" in info:
        return str(info["path"])
    values = {}
    for name, pattern in group_patterns(info["pattern"].pattern).items():
        candidates = ["dummy", *pattern.split("|")]
        accepted = [c for c in candidates if re.fullmatch(pattern, c)]
        assert accepted, f"no dummy value for {{{name}}} in {info['formatter']}: extend concrete_path"
        values[name] = accepted[0]
    return str(info["formatter"]).format(**values)


async def every_route(app: web.Application) -> list[tuple[str, str, str]]:
    """(method, concrete path, canonical path) of every route but HEAD, each checked to reach its route."""
    found = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        assert route.resource is not None
        canonical = route.resource.canonical
        path = concrete_path(route.resource)
        match = await app.router.resolve(make_mocked_request(route.method, path, app=app))
        assert match.route is route, f"{route.method} {path} does not reach {canonical}"
        found.append((route.method, path, canonical))
    assert len(found) >= 20, found  # the API is there: the checks below are not vacuous
    return found


def required_scope(method: str, canonical: str) -> str | None:
    """The scope the issue asks of each route (None: public, or authenticated by its handler)."""
    if canonical in PUBLIC_PATHS or canonical in UI_PATHS or canonical == SESSIONS_URL:
        return None
    if canonical.startswith(KEYS_URL):
        return "admin"
    if method == "POST" and canonical == EVENTS_URL:
        return "ingest"
    if method == "PUT" and "/checkpoints/" in canonical:
        return "ingest"  # workers upload their checkpoints
    if method == "POST" and "export" in canonical:
        return "read"  # an export reads; its rate-limit class is export
    return "read" if method == "GET" else "write"


async def login(anonymous: aiohttp.ClientSession, client: TestClient, secret: str) -> aiohttp.ClientResponse:
    answer = await anonymous.post(client.make_url(SESSIONS_URL), json={"api_key": secret})
    await answer.read()
    return answer


async def session_token(anonymous: aiohttp.ClientSession, client: TestClient, secret: str) -> str:
    answer = await login(anonymous, client, secret)
    assert answer.status == 201, await answer.text()
    return answer.cookies[SESSION_COOKIE].value


# -- every route -----------------------------------------------------------------------------


async def test_every_route_but_health_and_metrics_refuses_anonymous_calls(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    answered_anonymously = set()
    for method, path, canonical in await every_route(client.app):
        async with anonymous.request(method, client.make_url(path)) as answer:
            if answer.status != 401:
                answered_anonymously.add(canonical)
                continue
            error = (await answer.json())["error"]
            assert error["code"] == "unauthorized", (method, path)
            assert answer.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
    # GET /api/v1/sessions answers `data: null` to a browser without a session.
    assert answered_anonymously == PUBLIC_PATHS | UI_PATHS | {SESSIONS_URL}


async def test_health_checks_and_metrics_answer_anonymous_calls(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    for path in ("/healthz", "/metrics"):
        async with anonymous.get(client.make_url(path)) as answer:
            assert answer.status == 200, path
    async with anonymous.get(client.make_url("/readyz")) as answer:
        assert answer.status in (200, 503)  # ready or not, it says so without credentials


async def test_metrics_need_the_read_scope_with_no_metrics_public(
    app_client: Any, anonymous: aiohttp.ClientSession
) -> None:
    client = await app_client(metrics_public=False)
    url = client.make_url("/metrics")
    async with anonymous.get(url) as answer:
        await assert_error(answer, 401, "unauthorized")
    ingest_only = await create_key(client, "ingest")
    async with anonymous.get(url, headers=auth(ingest_only["secret"])) as answer:
        await assert_error(answer, 403, "forbidden")
    reader = await create_key(client, "read")
    async with anonymous.get(url, headers=auth(reader["secret"])) as answer:
        assert answer.status == 200


def test_an_app_with_a_route_that_declares_no_access_does_not_start() -> None:
    async def declared(request: web.Request) -> web.Response:
        return web.Response()

    async def undeclared(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/declared", public(declared))
    app.router.add_get("/undeclared", undeclared)
    with pytest.raises(RuntimeError, match="/undeclared"):
        check_routes(app)


def test_an_app_whose_routes_all_declare_access_starts() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/open", public(handler))
    app.router.add_get("/closed", requires("read")(handler))
    check_routes(app)


# -- scopes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["read", "write", "ingest"])
async def test_a_key_reaches_exactly_the_routes_of_its_scope(
    client: TestClient, anonymous: aiohttp.ClientSession, scope: str
) -> None:
    key = await create_key(client, scope)
    for method, path, canonical in await every_route(client.app):
        needed = required_scope(method, canonical)
        if needed is None:
            continue
        async with anonymous.request(method, client.make_url(path), headers=auth(key["secret"])) as answer:
            if needed == scope:
                assert answer.status not in (401, 403), (method, canonical, answer.status)
            else:
                assert answer.status == 403, (method, canonical, answer.status)
                assert (await answer.json())["error"]["code"] == "forbidden"


async def test_an_admin_key_reaches_every_route(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    admin = await create_key(client, "admin")
    for method, path, canonical in await every_route(client.app):
        if required_scope(method, canonical) is None:
            continue
        async with anonymous.request(method, client.make_url(path), headers=auth(admin["secret"])) as answer:
            assert answer.status not in (401, 403), (method, canonical, answer.status)


SCOPE_EXAMPLES: dict[str, tuple[str, str, Any, int]] = {
    "read": ("GET", EXPERIMENTS_URL, None, 200),
    "write": ("POST", EXPERIMENTS_URL, {"experiment": {"name": "made with a write key"}}, 201),
    "ingest": ("POST", EVENTS_URL, batch(2), 202),
    "admin": ("POST", KEYS_URL, {"api_key": {"name": "made by an admin key", "scopes": ["read"]}}, 201),
}


@pytest.mark.parametrize("scope", list(SCOPE_EXAMPLES))
async def test_a_key_with_the_scope_succeeds(client: TestClient, anonymous: aiohttp.ClientSession, scope: str) -> None:
    key = await create_key(client, scope)
    method, path, body, status = SCOPE_EXAMPLES[scope]
    async with anonymous.request(method, client.make_url(path), json=body, headers=auth(key["secret"])) as answer:
        assert answer.status == status, await answer.text()


async def test_an_admin_key_succeeds_with_every_scope(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    admin = await create_key(client, "admin")
    for method, path, body, status in SCOPE_EXAMPLES.values():
        async with anonymous.request(method, client.make_url(path), json=body, headers=auth(admin["secret"])) as answer:
            assert answer.status == status, (method, path, await answer.text())


async def test_a_key_without_the_scope_is_403_forbidden(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    reader = await create_key(client, "read")
    url = client.make_url(EXPERIMENTS_URL)
    async with anonymous.post(url, json={"experiment": {"name": "nope"}}, headers=auth(reader["secret"])) as answer:
        error = await assert_error(answer, 403, "forbidden")
    assert "write" in error["message"]
    listed = await (await client.get(EXPERIMENTS_URL)).json()
    assert listed["data"] == []  # nothing was created


async def test_a_key_with_several_scopes_has_each_of_them(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    key = await create_key(client, "read", "write")
    headers = auth(key["secret"])
    async with anonymous.post(
        client.make_url(EXPERIMENTS_URL), json={"experiment": {"name": "e"}}, headers=headers
    ) as answer:
        assert answer.status == 201
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=headers) as answer:
        assert answer.status == 200
    async with anonymous.post(client.make_url(EVENTS_URL), json=batch(1), headers=headers) as answer:
        await assert_error(answer, 403, "forbidden")


# -- Bearer keys -------------------------------------------------------------------------------


async def test_a_request_without_credentials_is_401(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    async with anonymous.get(client.make_url(EXPERIMENTS_URL)) as answer:
        await assert_error(answer, 401, "unauthorized")
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="crucible"'


BAD_AUTHORIZATION = {
    "basic scheme": lambda secret: "Basic dXNlcjpwYXNzd29yZA==",
    "scheme only": lambda secret: "Bearer",
    "scheme and a space": lambda secret: "Bearer ",
    "secret without scheme": lambda secret: secret,
    "token scheme": lambda secret: f"Token {secret}",
    "unknown key id": lambda secret: "Bearer crucible.key_0000000000000000.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "right key id, wrong random part": lambda secret: "Bearer " + secret.rsplit(".", 1)[0] + ".wrong",
    "one character appended": lambda secret: f"Bearer {secret}x",
    "one character dropped": lambda secret: f"Bearer {secret[:-1]}",
    "other prefix": lambda secret: "Bearer " + secret.replace("crucible.", "other.", 1),
    "prefix only": lambda secret: "Bearer crucible",
    "garbage": lambda secret: "Bearer !!!",
}


@pytest.mark.parametrize("kind", list(BAD_AUTHORIZATION))
async def test_a_malformed_or_wrong_authorization_header_is_401(
    client: TestClient, anonymous: aiohttp.ClientSession, kind: str
) -> None:
    key = await create_key(client, "read")
    header = BAD_AUTHORIZATION[kind](key["secret"])
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers={"Authorization": header}) as answer:
        await assert_error(answer, 401, "unauthorized")


async def test_the_bearer_scheme_is_case_insensitive(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    key = await create_key(client, "read")
    headers = {"Authorization": f"bearer {key['secret']}"}
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=headers) as answer:
        assert answer.status == 200


async def test_a_bad_authorization_header_is_401_even_with_a_valid_session(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    key = await create_key(client, "read")
    token = await session_token(anonymous, client, key["secret"])
    headers = {**session_cookie(token), "Authorization": "Bearer nonsense"}
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=headers) as answer:
        await assert_error(answer, 401, "unauthorized")


async def test_a_revoked_key_is_401(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    key = await create_key(client, "read")
    url = client.make_url(EXPERIMENTS_URL)
    async with anonymous.get(url, headers=auth(key["secret"])) as answer:
        assert answer.status == 200
    assert (await client.delete(f"{KEYS_URL}/{key['id']}")).status == 204
    async with anonymous.get(url, headers=auth(key["secret"])) as answer:
        await assert_error(answer, 401, "unauthorized")


# -- sessions ------------------------------------------------------------------------------------


async def test_login_answers_the_session_and_sets_an_httponly_lax_cookie(
    client: TestClient, anonymous: aiohttp.ClientSession
) -> None:
    key = await create_key(client, "read", "write")
    answer = await login(anonymous, client, key["secret"])
    assert answer.status == 201
    data = (await answer.json())["data"]
    assert data["key_id"] == key["id"]
    assert data["scopes"] == ["read", "write"]
    assert data["expires_at"]
    cookie = answer.cookies[SESSION_COOKIE]
    assert cookie.value
    assert key["secret"] not in cookie.value  # the cookie is a session token, not the key
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert int(cookie["max-age"]) == client.app[SETTINGS].session_ttl_seconds
    set_cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie
    assert "SameSite=Lax" in set_cookie


async def test_the_session_cookie_authenticates_requests(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    key = await create_key(client, "read")
    token = await session_token(anonymous, client, key["secret"])
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=session_cookie(token)) as answer:
        assert answer.status == 200


async def test_a_session_has_the_scopes_of_its_key(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    key = await create_key(client, "read")
    token = await session_token(anonymous, client, key["secret"])
    url = client.make_url(EXPERIMENTS_URL)
    async with anonymous.post(
        url, json={"experiment": {"name": "nope"}}, headers=session_cookie(token, client)
    ) as answer:
        await assert_error(answer, 403, "forbidden")


@pytest.mark.parametrize(
    "body",
    [
        {"api_key": "crucible.key_0000000000000000.not-a-real-secret"},
        {"api_key": "nonsense"},
        {},
    ],
    ids=["unknown key", "garbage", "no key"],
)
async def test_login_with_a_bad_key_is_401_and_sets_no_cookie(
    client: TestClient, anonymous: aiohttp.ClientSession, body: dict[str, str]
) -> None:
    async with anonymous.post(client.make_url(SESSIONS_URL), json=body) as answer:
        await assert_error(answer, 401, "unauthorized")
        assert SESSION_COOKIE not in answer.cookies


async def test_login_with_a_revoked_key_is_401(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    key = await create_key(client, "read")
    assert (await client.delete(f"{KEYS_URL}/{key['id']}")).status == 204
    answer = await login(anonymous, client, key["secret"])
    await assert_error(answer, 401, "unauthorized")


async def test_logout_refuses_the_old_cookie_afterwards(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    key = await create_key(client, "read")
    token = await session_token(anonymous, client, key["secret"])
    async with anonymous.delete(client.make_url(SESSIONS_URL), headers=session_cookie(token, client)) as answer:
        assert answer.status == 204
        assert answer.cookies[SESSION_COOKIE].value == ""  # the browser is told to forget it
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=session_cookie(token)) as answer:
        await assert_error(answer, 401, "unauthorized")


async def test_logout_ends_only_that_session(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    key = await create_key(client, "read")
    ended = await session_token(anonymous, client, key["secret"])
    kept = await session_token(anonymous, client, key["secret"])
    async with anonymous.delete(client.make_url(SESSIONS_URL), headers=session_cookie(ended, client)) as answer:
        assert answer.status == 204
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=session_cookie(kept)) as answer:
        assert answer.status == 200
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=auth(key["secret"])) as answer:
        assert answer.status == 200  # the key itself still works


async def test_logout_without_credentials_is_401(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    async with anonymous.delete(client.make_url(SESSIONS_URL)) as answer:
        await assert_error(answer, 401, "unauthorized")


def _flip_signature(token: str) -> str:
    payload, _, signature = token.partition(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def _extend_expiry(token: str) -> str:
    """The same signature on a payload whose expiry is pushed a year later."""
    payload, _, signature = token.partition(".")
    claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims[2] += 365 * 86400
    forged = base64.urlsafe_b64encode(msgspec.json.encode(claims)).decode().rstrip("=")
    return f"{forged}.{signature}"


def _other_key(token: str) -> str:
    payload, _, signature = token.partition(".")
    claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims[1] = "key_0000000000000000"
    forged = base64.urlsafe_b64encode(msgspec.json.encode(claims)).decode().rstrip("=")
    return f"{forged}.{signature}"


TAMPERINGS = {
    "signature changed": _flip_signature,
    "expiry extended": _extend_expiry,
    "key changed": _other_key,
    "signature removed": lambda token: token.partition(".")[0],
    "signature only": lambda token: "." + token.partition(".")[2],
    "empty": lambda token: "",
    "garbage": lambda token: "not-a-token",
    "api key as cookie": lambda token: "crucible.key_0000000000000000.x",
}


@pytest.mark.parametrize("kind", list(TAMPERINGS))
async def test_a_tampered_session_token_is_401(client: TestClient, anonymous: aiohttp.ClientSession, kind: str) -> None:
    key = await create_key(client, "read")
    token = await session_token(anonymous, client, key["secret"])
    tampered = TAMPERINGS[kind](token)
    assert tampered != token
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=session_cookie(tampered)) as answer:
        await assert_error(answer, 401, "unauthorized")


async def test_a_session_token_from_another_server_secret_is_401(
    app_client: Any, anonymous: aiohttp.ClientSession
) -> None:
    first = await app_client(session_secret="one secret")
    key = await create_key(first, "read")
    token = await session_token(anonymous, first, key["secret"])
    await first.close()
    second = await app_client(session_secret="another secret")
    async with anonymous.get(second.make_url(EXPERIMENTS_URL), headers=session_cookie(token)) as answer:
        await assert_error(answer, 401, "unauthorized")


async def test_a_session_token_works_on_a_replica_with_the_same_secret(
    app_client: Any, anonymous: aiohttp.ClientSession
) -> None:
    first = await app_client(session_secret="shared secret")
    key = await create_key(first, "read")
    token = await session_token(anonymous, first, key["secret"])
    await first.close()
    second = await app_client(session_secret="shared secret")
    async with anonymous.get(second.make_url(EXPERIMENTS_URL), headers=session_cookie(token)) as answer:
        assert answer.status == 200


async def test_an_expired_session_is_401(app_client: Any, anonymous: aiohttp.ClientSession) -> None:
    client = await app_client(session_ttl_seconds=1)
    key = await create_key(client, "read")
    answer = await login(anonymous, client, key["secret"])
    assert int(answer.cookies[SESSION_COOKIE]["max-age"]) == 1
    token = answer.cookies[SESSION_COOKIE].value
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=session_cookie(token)) as fresh:
        assert fresh.status == 200
    await asyncio.sleep(2.1)
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=session_cookie(token)) as expired:
        await assert_error(expired, 401, "unauthorized")


async def test_the_session_of_a_revoked_key_is_401(client: TestClient, anonymous: aiohttp.ClientSession) -> None:
    key = await create_key(client, "read")
    token = await session_token(anonymous, client, key["secret"])
    assert (await client.delete(f"{KEYS_URL}/{key['id']}")).status == 204
    async with anonymous.get(client.make_url(EXPERIMENTS_URL), headers=session_cookie(token)) as answer:
        await assert_error(answer, 401, "unauthorized")
