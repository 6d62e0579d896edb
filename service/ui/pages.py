"""The web UI's routes: every page's URL answers the one HTML shell, whose script draws the
page from the API; the scripts and styles under /ui/; and the one-time sign-in link."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from aiohttp import web

from service.core.errors import ApiError
from service.http.appkeys import SIGN_IN_LINKS
from service.http.auth import page
from service.http.responses import state_of
from service.http.session_cookie import issue_session, set_session_cookie
from service.ui.sign_in_link import SIGN_IN_LINK_PATH
from service.ui.static_files import StaticFile, StaticFolder

routes = web.RouteTableDef()

STATIC = Path(__file__).parent / "static"
# Each page a user can bookmark; the shell's router (static/app.js) draws the one asked for.
PAGE_PATHS = (
    "/",
    "/sign-in",
    "/experiments",
    "/experiments/{id}",
    "/runs/{id}",
    "/compare",
    "/explore",
    "/models",
    "/models/{id}",
)
# Scripts only from this server's files (no inline script, no eval); styles may be inline
# because BokehJS styles the elements it draws with style attributes and <style> elements
# in their shadow roots; WebSockets and fetches to this origin only.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
UI_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",  # a sign-in link's token never leaves in a Referer
    "X-Frame-Options": "DENY",
}
# Revalidated on every load (a 304 when unchanged): an upgraded server is never mixed with
# the scripts of the one before.
REVALIDATE = "no-cache"


@cache
def _static() -> StaticFolder:
    return StaticFolder(STATIC, REVALIDATE)


# The charting library: BokehJS's core and its plotting API, from the installed bokeh package.
CHART_LIBRARY_FILES = ("bokeh.min.js", "bokeh-api.min.js")


@cache
def _chart_library() -> dict[str, StaticFile]:
    spec = importlib.util.find_spec("bokeh")  # located, not imported: only its files are served
    if spec is None or spec.origin is None:
        raise RuntimeError("the bokeh package is not installed: `pip install crucible` installs it")
    folder = Path(spec.origin).parent / "server" / "static" / "js"
    return {name: StaticFile(folder / name, REVALIDATE) for name in CHART_LIBRARY_FILES}


@page
async def shell(request: web.Request) -> web.Response:
    found = _static().get("index.html")
    assert found is not None
    return await found.response(request, UI_HEADERS)


for _path in PAGE_PATHS:
    routes.get(_path, name=None)(shell)


@routes.get("/ui/vendor/{name}")
@page
async def chart_library_file(request: web.Request) -> web.Response:
    found = _chart_library().get(request.match_info["name"])
    if found is None:
        raise ApiError(404, "not_found", f"no file {request.path}")
    return await found.response(request, UI_HEADERS)


@routes.get("/ui/{name:.+}")
@page
async def static_file(request: web.Request) -> web.Response:
    found = _static().get(request.match_info["name"])
    if found is None:
        raise ApiError(404, "not_found", f"no file {request.path}")
    return await found.response(request, UI_HEADERS)


@routes.get(SIGN_IN_LINK_PATH)
@page
async def sign_in_link(request: web.Request) -> web.Response:
    """The link `crucible serve` prints: a session for the admin key, once, within minutes.
    A spent or expired link leads to the sign-in page, which says so."""
    key_id = request.app[SIGN_IN_LINKS].redeem(request.query.get("token", ""))
    key = state_of(request).api_keys.get(key_id) if key_id is not None else None
    if key is None or key.revoked_at is not None:
        return web.Response(status=303, headers={**UI_HEADERS, "Location": "/sign-in?link=spent"})
    response = web.Response(status=303, headers={**UI_HEADERS, "Location": "/"})
    token, _ = issue_session(request, key.id)
    set_session_cookie(request, response, token)
    return response
