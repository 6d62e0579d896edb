"""The browser session cookie: set by a login or a sign-in link, cleared by a logout."""

from __future__ import annotations

from aiohttp import web

from service.http.appkeys import SESSION_SIGNER, SETTINGS
from service.http.origins import is_https
from service.resources.credentials import SESSION_COOKIE, SessionClaims


def issue_session(request: web.Request, key_id: str) -> tuple[str, SessionClaims]:
    """A new session token for `key_id`, valid for the configured session lifetime."""
    return request.app[SESSION_SIGNER].issue(key_id, request.app[SETTINGS].session_ttl_seconds)


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=request.app[SETTINGS].session_ttl_seconds,
        httponly=True,  # page scripts never see it: an injected script cannot carry it away
        samesite="Lax",
        secure=is_https(request),  # behind a TLS-terminating proxy only if it is a trusted one
        path="/",
    )


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/", secure=is_https(request), httponly=True, samesite="Lax")
