"""Authentication, scopes and rate limits for every route.

Each handler declares what it needs with `@requires(scope, limit)` or `@public`;
`check_routes` refuses to build an app with a route that declares nothing, so a
new endpoint cannot skip authentication by accident. The middleware finds the
caller (a Bearer API key or the session cookie), checks the scope, and counts the
request against the key's limit for the endpoint's class. Ingest is counted in
events by its handler (`take_events`), once the batch is decoded. A request refused
for want of valid credentials has no key to count against: it counts against its
client address (`--unauthenticated-rate-limit`), so that its answer too says where
its limit stands.

A browser sends the session cookie with requests that other sites' pages make, so a
change (POST, PUT, PATCH, DELETE) authenticated by the cookie must come from a page
of this service: its Origin (or, without one, its Referer) must be the service's own
origin or one of `--allowed-origins`, else 403. A request with neither header is
refused too: browsers send Origin with every such request, and other clients use a
Bearer key, which no page can make a browser send.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from service.core import metrics
from service.core.errors import ApiError
from service.core.ratelimit import Quota
from service.http.appkeys import PROJECTOR, RATE_LIMITER, SESSION_SIGNER, SETTINGS
from service.http.origins import client_view, describe, origin_allowed, own_origin
from service.resources.credentials import SECRET_PREFIX, SESSION_COOKIE, Principal, key_for_secret

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])

ACCESS_ATTRIBUTE = "crucible_access"
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
QUOTA: web.RequestKey[Quota] = web.RequestKey("quota")
# Methods that change nothing, which a page of another site may cause with the cookie.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The rate-limit class of requests without valid credentials, counted per client address.
UNAUTHENTICATED = "unauthenticated"
# The Phoenix client's `authToken` travels as this WebSocket sub-protocol plus the token in base64.
PHOENIX_TOKEN_PROTOCOL = "base64url.bearer.phx."


@dataclass(frozen=True, slots=True)
class Access:
    """What a route needs: a scope (None = anyone) and the rate-limit class it counts in.

    `token_param` (WebSockets, on which a browser cannot set headers): the credential may
    also come as `?token=` (a key secret or a session token) or as the Phoenix client's
    `authToken` sub-protocol; the session cookie counts only from a page of this server."""

    scope: str | None
    limit_class: str | None
    token_param: bool = False
    page: bool = False  # a page of the web UI (HTML and its files), not an API operation


def requires(scope: str, limit: str | None = None, token_param: bool = False) -> Callable[[H], H]:
    """Declare a route's scope; `limit` is its rate-limit class (by default read for
    the read scope, write otherwise; "ingest" is counted by the handler in events);
    `token_param` also takes the credential from the query (see `Access`)."""
    limit_class = limit or ("read" if scope == "read" else "write")

    def declare(handler: H) -> H:
        setattr(handler, ACCESS_ATTRIBUTE, Access(scope, limit_class, token_param))
        return handler

    return declare


def public(handler: H) -> H:
    """Declare a route open to anonymous callers (health checks only)."""
    setattr(handler, ACCESS_ATTRIBUTE, Access(None, None))
    return handler


def page(handler: H) -> H:
    """Declare a route of the web UI: open to anyone (a page holds no data; it asks the API,
    as the signed-in browser), and not an operation of the API's OpenAPI document."""
    setattr(handler, ACCESS_ATTRIBUTE, Access(None, None, page=True))
    return handler


def is_page(handler: Any) -> bool:
    access = access_of(handler)
    return access is not None and access.page


def access_of(handler: Any) -> Access | None:
    return getattr(handler, ACCESS_ATTRIBUTE, None)


def check_routes(app: web.Application) -> None:
    """Every route must declare its access; raise at start-up otherwise."""
    for route in app.router.routes():
        if route.method != "HEAD" and access_of(route.handler) is None:
            raise RuntimeError(f"route {route.method} {route.resource} declares no access (@requires or @public)")


def authenticate(request: web.Request, token_param: bool = False) -> Principal:
    """The caller, or 401."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise unauthorized("the Authorization header must be 'Bearer <api key>'")
        return _key_principal(request, secret.strip())
    token = _token_of(request) if token_param else None
    if token is not None:
        if token.startswith(SECRET_PREFIX + "."):
            return _key_principal(request, token)
        return _session_principal(request, token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None and (not token_param or _same_origin(request)):
        if request.method not in SAFE_METHODS:
            check_page_origin(request)
        return _session_principal(request, cookie)
    if token_param:
        raise unauthorized("authentication required: connect with params {token: <api key or session token>}")
    raise unauthorized("authentication required: send 'Authorization: Bearer <api key>' or a session cookie")


def _key_principal(request: web.Request, secret: str) -> Principal:
    key = key_for_secret(request.app[PROJECTOR].state, secret)
    if key is None:
        raise unauthorized("the API key is not valid (unknown, revoked or mistyped)")
    return Principal(key)


def _session_principal(request: web.Request, token: str) -> Principal:
    state = request.app[PROJECTOR].state
    claims = request.app[SESSION_SIGNER].verify(token)
    if claims is None or claims.session_id in state.ended_sessions:
        raise unauthorized("the session has expired or ended; log in again")
    key = state.api_keys.get(claims.key_id)
    if key is None or key.revoked_at is not None:
        raise unauthorized("the session's API key was revoked")
    return Principal(key, claims.session_id, claims.expires)


def _same_origin(request: web.Request) -> bool:
    """Whether a WebSocket handshake comes from a page of this server (or from no page at all).

    Browsers send cookies with the WebSocket handshakes of any page, but no CORS check
    applies to them: without this, another site's page could open a socket in its user's name."""
    origin = request.headers.get("Origin")
    return origin is None or origin_allowed(request, origin)


def check_page_origin(request: web.Request) -> None:
    """403 unless the page that made this cookie-authenticated change is one of this service's."""
    header = "Origin" if "Origin" in request.headers else "Referer"
    source = request.headers.get(header)
    if source is None:
        raise forbidden(
            "a change authenticated by the session cookie must carry an Origin or Referer header naming a page"
            " of this service (browsers send it); other clients should send 'Authorization: Bearer <api key>'",
            {"Origin": ["is required with the session cookie"]},
        )
    if not origin_allowed(request, source):
        raise forbidden(
            f"cross-origin request refused: the {header} {source!r} is not this service's origin"
            f" ({describe(own_origin(request))}) nor one of --allowed-origins",
            {header: ["is not an origin allowed to use the session cookie"]},
        )


def forbidden(message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(403, "forbidden", message, details)


def _token_of(request: web.Request) -> str | None:
    """`?token=`, else the token the Phoenix client's `authToken` option puts in the
    Sec-WebSocket-Protocol header (base64, after a fixed prefix)."""
    token = request.query.get("token")
    if token:
        return token
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(PHOENIX_TOKEN_PROTOCOL):
            encoded = protocol[len(PHOENIX_TOKEN_PROTOCOL) :]
            standard = encoded.replace("-", "+").replace("_", "/")  # btoa gives + and /; accept URL-safe too
            with contextlib.suppress(ValueError):
                return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True).decode()
    return None


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="crucible"'})


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def take(request: web.Request, limit_class: str, amount: int = 1) -> None:
    """Count `amount` against the caller's limit for `limit_class`; 429 when over, counting nothing."""
    key = principal_of(request).key
    _count(request, key.id, limit_class, getattr(key.rate_limits, limit_class), amount)


def take_unauthenticated(request: web.Request) -> None:
    """Count a request without valid credentials (or a login) against its client address; 429 when over."""
    address = client_view(request).address or "unknown"
    _count(request, "address:" + address, UNAUTHENTICATED, request.app[SETTINGS].unauthenticated_rate_limit, 1)


def _count(request: web.Request, counted: str, limit_class: str, limit: int, amount: int) -> None:
    quota = request.app[RATE_LIMITER].take(counted, limit_class, limit, amount)
    request[QUOTA] = quota
    if not quota.allowed:
        metrics.RATE_LIMITED.labels(limit_class).inc()
        unit = "events" if limit_class == "ingest" else "requests"
        raise ApiError(
            429,
            "rate_limited",
            f"rate limit of {limit} {limit_class} {unit} per minute reached"
            + (f"; this request needs {amount}" if amount > 1 else "")
            + f"; retry in {quota.retry_after} s",
            {limit_class: [f"at most {limit} {unit} per minute"]},
            headers=quota.headers(),
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match = request.match_info
    if match.http_exception is not None:  # no such route: let aiohttp answer 404/405
        return await handler(request)
    access = access_of(match.handler)
    if access is None:
        raise RuntimeError(f"{request.method} {request.path} declares no access")
    if access.scope is None:
        return await handler(request)
    try:
        principal = authenticate(request, access.token_param)
    except ApiError as error:
        metrics.AUTH_FAILURES.labels(str(error.status)).inc()
        take_unauthenticated(request)
        raise
    request[PRINCIPAL] = principal
    if access.limit_class is not None:
        # Counted before the scope check, so that a refusal too counts and says where the
        # key's limit stands. Ingest counts events once the batch is decoded; taking 0 now
        # still gives its headers.
        take(request, access.limit_class, 0 if access.limit_class == "ingest" else 1)
    if not principal.allows(access.scope):
        metrics.AUTH_FAILURES.labels("403").inc()
        raise forbidden(
            f"this API key lacks the {access.scope!r} scope (it has {', '.join(sorted(principal.key.scopes))})"
        )
    return await handler(request)


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every answer to a counted request says where its limit stands."""
    quota = request.get(QUOTA)
    if quota is not None:
        for name, value in quota.headers().items():
            response.headers.setdefault(name, value)
