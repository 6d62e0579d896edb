"""Endpoints for API keys (admin scope) and browser sessions (a cookie made from a key)."""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from schemas.keys import ApiKeyInput, SessionInput, SessionOut
from schemas.resources import ApiKeyEvent, RateLimits, SessionEnded
from service.core.errors import ApiError
from service.http.appkeys import LOG, PROJECTOR, SESSION_SIGNER
from service.http.auth import (
    authenticate,
    forbidden,
    principal_of,
    public,
    requires,
    take_unauthenticated,
    unauthorized,
)
from service.http.bodies import check_fields, fields_of, parse_object, read_body, unwrap
from service.http.listing import SortedViews, paginate, time_key
from service.http.origins import origin_allowed
from service.http.params import page_query, parse_page, takes
from service.http.responses import done_response, found, json_response, state_of
from service.http.session_cookie import clear_session_cookie, issue_session, set_session_cookie
from service.resources.commands import request_ref, submit
from service.resources.credentials import ANY_SCOPE, SCOPES, SESSION_COOKIE, key_for_secret
from service.resources.fold import ApiKey
from service.resources.keys import create_key, key_out, revoke_key

routes = web.RouteTableDef()

KEY_FIELDS = fields_of(ApiKeyInput)
SESSION_FIELDS = fields_of(SessionInput)
SORTS = {"created_at": lambda k: time_key(k.created_at), "name": lambda k: k.name.casefold()}

LIST_QUERY = page_query(SORTS, "-created_at")

_views: SortedViews[ApiKey] = SortedViews(SORTS)


def key_in(request: web.Request, key_id: str) -> ApiKey:
    return found(state_of(request).api_keys, key_id, f"API key {key_id} not found")


@routes.post("/api/v1/api-keys")
@requires("admin")
async def create_api_key(request: web.Request) -> web.Response:
    body = await read_body(request)
    values = check_fields(unwrap(parse_object(body), "api_key"), KEY_FIELDS, "an API key")
    actor = principal_of(request).key.id
    done, secret = await create_key(
        request.app[LOG],
        request.app[PROJECTOR],
        values["name"],
        values["scopes"],
        values.get("rate_limits", RateLimits()),
        actor,
        request_ref(request, actor, body),
    )
    return done_response(done, key_out(done.state.api_keys[done.resource_id], secret), 201)


@routes.get("/api/v1/api-keys")
@requires("admin", limit="read")
@takes(LIST_QUERY)
async def list_api_keys(request: web.Request) -> web.Response:
    query = request.query
    LIST_QUERY.check(query)
    sort = LIST_QUERY.sort(query)
    page = parse_page(query, sort)
    state = state_of(request)
    rows = _views.rows(state, state.version(ApiKeyEvent), state.api_keys.values(), sort.field)
    result = paginate(rows, sort, page)
    return json_response({"data": [key_out(k) for k in result.items], "meta": result.meta})


@routes.get("/api/v1/api-keys/{id}")
@requires("admin", limit="read")
async def get_api_key(request: web.Request) -> web.Response:
    return json_response({"data": key_out(key_in(request, request.match_info["id"]))})


@routes.delete("/api/v1/api-keys/{id}")
@requires("admin")
async def revoke_api_key(request: web.Request) -> web.Response:
    """Revoke a key: every API process refuses it as soon as it folds the event."""
    key_id = request.match_info["id"]
    key_in(request, key_id)
    await revoke_key(request.app[LOG], request.app[PROJECTOR], key_id, principal_of(request).key.id)
    return web.Response(status=204)


@routes.post("/api/v1/sessions")
@public  # it authenticates the key in its body itself
async def create_session(request: web.Request) -> web.Response:
    # Logins count against the client's address, as requests without valid credentials do.
    take_unauthenticated(request)
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(request, origin):
        # Another site's page logging its visitor in with the attacker's key (login CSRF).
        raise forbidden(
            f"cross-origin login refused: the Origin {origin!r} is not this service's nor one of --allowed-origins",
            {"Origin": ["is not an origin allowed to log in"]},
        )
    body = await read_body(request)
    raw = parse_object(body, allow_empty=True)
    if "api_key" not in raw:
        raise unauthorized('send {"api_key": "<secret>"} to open a session')
    values = check_fields(raw, SESSION_FIELDS, "a session")
    key = key_for_secret(state_of(request), values["api_key"])
    if key is None:
        raise unauthorized("the API key is not valid (unknown, revoked or mistyped)")
    token, claims = issue_session(request, key.id)
    response = json_response({"data": _session_out(key, claims.expires)}, 201)
    set_session_cookie(request, response, token)
    return response


@routes.get("/api/v1/sessions")
@public  # a browser without a session learns so from `data: null`, not from an error
async def get_session(request: web.Request) -> web.Response:
    """The session this browser holds: which key, its scopes, until when (a page shows only what
    the scopes allow). `data` is null with no session, or one that expired or was ended."""
    if "Authorization" in request.headers:
        principal = authenticate(request)  # a client with a bad key is told so: 401
        if principal.session_expires is None:
            raise ApiError(422, "validation_error", "no session: this request used an API key, not a session")
    else:
        try:
            principal = authenticate(request)
        except ApiError as error:
            if error.status != 401:
                raise
            take_unauthenticated(request)
            response = json_response({"data": None})
            if SESSION_COOKIE in request.cookies:
                clear_session_cookie(request, response)  # a stale cookie is of no further use
            return response
    assert principal.session_expires is not None
    return json_response({"data": _session_out(principal.key, principal.session_expires)})


def _session_out(key: ApiKey, expires: int) -> SessionOut:
    """A session as answered: its key, the key's scopes, and when it ends (Unix seconds)."""
    scopes = sorted(key.scopes, key=SCOPES.index)
    return SessionOut(key_id=key.id, scopes=scopes, expires_at=dt.datetime.fromtimestamp(expires, dt.UTC))


@routes.delete("/api/v1/sessions")
@requires(ANY_SCOPE)
async def end_session(request: web.Request) -> web.Response:
    """Log out: the session's token is refused from now on, in every API process."""
    principal = principal_of(request)
    if principal.session_id is None:
        raise ApiError(422, "validation_error", "no session to end: this request used an API key, not a session")
    token = request.cookies[SESSION_COOKIE]
    claims = request.app[SESSION_SIGNER].verify(token)
    assert claims is not None
    expires_at = dt.datetime.fromtimestamp(claims.expires, dt.UTC)
    await submit(
        request.app[LOG],
        request.app[PROJECTOR],
        lambda env: SessionEnded(**env.fields(), session_id=principal.session_id or "", expires_at=expires_at),
        principal.key.id,
    )
    response = web.Response(status=204)
    clear_session_cookie(request, response)
    return response
