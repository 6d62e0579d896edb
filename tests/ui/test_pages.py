"""Crucible UI as HTTP sees it: the pages' shell and headers, the static files, the one-time
sign-in link and the session it opens. The pages themselves run in a browser: test_browser.py."""

from __future__ import annotations

import asyncio
import gzip
import html.parser
import importlib.util
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.http.appkeys import PROJECTOR, SETTINGS, SIGN_IN_LINKS
from service.resources.credentials import SESSION_COOKIE
from service.resources.keys import ADMIN_KEY_FILE
from service.ui.pages import CHART_LIBRARY_FILES, CONTENT_SECURITY_POLICY, PAGE_PATHS, STATIC
from service.ui.sign_in_link import SIGN_IN_LINK_SECONDS, local_sign_in_link
from tests.keys_support import auth, create_key, session_cookie

SESSIONS_URL = "/api/v1/sessions"


@pytest.fixture
async def anonymous() -> Any:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


class _Scripts(html.parser.HTMLParser):
    """Every <script> of a page and every attribute that would run inline code."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
        self.handlers += [f"{tag} {name}" for name, _ in attrs if name.startswith("on")]

    def handle_data(self, data: str) -> None:
        if self.lasttag == "script" and data.strip():
            self.handlers.append("inline script text")


def _concrete(path: str) -> str:
    return path.replace("{id}", "exp_1")


async def test_every_page_answers_the_shell_under_a_strict_policy(client: TestClient, anonymous: Any) -> None:
    for path in PAGE_PATHS:
        async with anonymous.get(client.make_url(_concrete(path))) as answer:
            assert answer.status == 200, path
            assert answer.content_type == "text/html"
            assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert answer.headers["X-Frame-Options"] == "DENY"
            assert answer.headers["Referrer-Policy"] == "no-referrer"
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            page = _Scripts()
            page.feed(await answer.text())
    assert page.scripts == [{"type": "module", "src": "/ui/app.js"}]
    assert page.handlers == []
    policy = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert policy["script-src"] == "'self'"  # no inline scripts, no eval
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"


async def test_no_script_of_the_ui_runs_inline_code_or_loads_from_elsewhere() -> None:
    for path in STATIC.rglob("*.js"):
        text = path.read_text(encoding="utf-8")
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function", "document.write"):
            assert forbidden not in text, f"{path.name}: {forbidden}"
        assert "http://" not in text and "https://" not in text, f"{path.name} names another origin"


async def test_static_files_are_revalidated_by_etag_and_gzipped(client: TestClient, anonymous: Any) -> None:
    url = client.make_url("/ui/app.js")
    async with anonymous.get(url, headers={"Accept-Encoding": "identity"}) as answer:
        assert answer.status == 200
        assert answer.content_type == "text/javascript"
        assert answer.headers["Cache-Control"] == "no-cache"
        body = await answer.read()
        etag = answer.headers["ETag"]
    assert body == (STATIC / "app.js").read_bytes()
    async with anonymous.get(url, headers={"If-None-Match": etag}) as answer:
        assert answer.status == 304
        assert await answer.read() == b""
    async with anonymous.get(url, headers={"Accept-Encoding": "gzip"}, auto_decompress=False) as answer:
        assert answer.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await answer.read()) == body


@pytest.mark.parametrize("name", CHART_LIBRARY_FILES)
async def test_the_charting_library_comes_from_the_bokeh_package(client: TestClient, anonymous: Any, name: str) -> None:
    installed = Path(importlib.util.find_spec("bokeh").origin).parent / "server" / "static" / "js" / name  # type: ignore[union-attr, arg-type]
    async with anonymous.get(
        client.make_url(f"/ui/vendor/{name}"), headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    ) as answer:
        assert answer.status == 200
        assert answer.content_type == "text/javascript"
        assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
        sent = await answer.read()
    assert gzip.decompress(sent) == installed.read_bytes()
    assert len(sent) < installed.stat().st_size / 2  # what a first view transfers


async def test_only_the_chart_library_files_are_served_from_its_package(client: TestClient, anonymous: Any) -> None:
    for name in ("bokeh-widgets.min.js", "compiler.js", "..%2F..%2F__init__.py", "plotly.min.js"):
        async with anonymous.get(client.make_url("/").with_path(f"/ui/vendor/{name}", encoded=True)) as answer:
            assert answer.status == 404, name


@pytest.mark.parametrize(
    "path", ["/ui/missing.js", "/ui/../app.py", "/ui/%2e%2e/%2e%2e/service/app.py", "/ui/pages/../../../pyproject.toml"]
)
async def test_a_file_outside_the_ui_folder_is_not_found(client: TestClient, anonymous: Any, path: str) -> None:
    async with anonymous.get(client.make_url("/").with_path(path, encoded=True)) as answer:
        assert answer.status == 404
        if answer.content_type == "application/json":
            assert (await answer.json())["error"]["code"] == "not_found"


# -- the one-time sign-in link -----------------------------------------------------------------


def _link(client: TestClient) -> str:
    """A link for the admin key, as `crucible serve` prints it, on the test server's address."""
    app = client.app
    settings = app[SETTINGS]
    (settings.data_path / ADMIN_KEY_FILE).write_text(client.secret + "\n")
    link = local_sign_in_link(settings, app[PROJECTOR].state, app[SIGN_IN_LINKS])
    assert link is not None
    return str(client.make_url("/sign-in/link").with_query(token=link.split("token=", 1)[1]))


async def test_the_link_opens_a_session_once(client: TestClient, anonymous: Any) -> None:
    link = _link(client)
    async with anonymous.get(link, allow_redirects=False) as answer:
        assert answer.status == 303
        assert answer.headers["Location"] == "/"
        cookie = answer.cookies[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Lax"
    async with anonymous.get(client.make_url(SESSIONS_URL), headers=session_cookie(cookie.value)) as answer:
        session = (await answer.json())["data"]
        assert "admin" in session["scopes"]
    async with anonymous.get(link, allow_redirects=False) as answer:
        assert answer.status == 303
        assert answer.headers["Location"] == "/sign-in?link=spent"
        assert SESSION_COOKIE not in answer.cookies


async def test_of_many_uses_of_one_link_at_once_exactly_one_signs_in(client: TestClient, anonymous: Any) -> None:
    link = _link(client)

    async def use() -> bool:
        async with anonymous.get(link, allow_redirects=False) as answer:
            return SESSION_COOKIE in answer.cookies

    assert sorted(await asyncio.gather(*(use() for _ in range(20)))) == [False] * 19 + [True]


async def test_an_expired_link_or_one_of_a_revoked_key_signs_nobody_in(client: TestClient, anonymous: Any) -> None:
    links = client.app[SIGN_IN_LINKS]
    expired = _link(client)
    now = links._clock()
    links._clock = lambda: now + SIGN_IN_LINK_SECONDS  # type: ignore[method-assign]
    async with anonymous.get(expired, allow_redirects=False) as answer:
        assert answer.headers["Location"] == "/sign-in?link=spent"
    links._clock = lambda: now  # type: ignore[method-assign]
    key = await create_key(client, "admin")
    (client.app[SETTINGS].data_path / ADMIN_KEY_FILE).write_text(key["secret"])
    link = local_sign_in_link(client.app[SETTINGS], client.app[PROJECTOR].state, links)
    assert link is not None
    answer = await client.delete(f"/api/v1/api-keys/{key['id']}")
    assert answer.status == 204
    async with anonymous.get(client.make_url("/sign-in/link").with_query(token=link.split("=", 1)[1])) as answer:
        assert answer.url.path_qs == "/sign-in?link=spent"
    async with anonymous.get(client.make_url("/sign-in/link"), allow_redirects=False) as answer:
        assert answer.headers["Location"] == "/sign-in?link=spent"  # no token at all


async def test_no_link_without_an_admin_key_file_or_with_a_revoked_one(client: TestClient) -> None:
    app = client.app
    assert local_sign_in_link(app[SETTINGS], app[PROJECTOR].state, app[SIGN_IN_LINKS]) is None
    (app[SETTINGS].data_path / ADMIN_KEY_FILE).write_text("crucible.key_none.nothing")
    assert local_sign_in_link(app[SETTINGS], app[PROJECTOR].state, app[SIGN_IN_LINKS]) is None


# -- GET /api/v1/sessions ----------------------------------------------------------------------


async def test_a_browser_without_a_session_is_told_so_without_an_error(client: TestClient, anonymous: Any) -> None:
    async with anonymous.get(client.make_url(SESSIONS_URL)) as answer:
        assert answer.status == 200
        assert await answer.json() == {"data": None}
    async with anonymous.get(client.make_url(SESSIONS_URL), headers=session_cookie("forged.token")) as answer:
        assert await answer.json() == {"data": None}
        assert answer.cookies[SESSION_COOKIE].value == ""  # the stale cookie is cleared


async def test_a_key_asking_for_its_session_is_told_it_has_none(client: TestClient, anonymous: Any) -> None:
    answer = await client.get(SESSIONS_URL)
    assert answer.status == 422
    assert (await answer.json())["error"]["code"] == "validation_error"
    async with anonymous.get(client.make_url(SESSIONS_URL), headers=auth("crucible.key_x.wrong")) as answer:
        assert answer.status == 401
