"""JSON answers and the pieces every resource endpoint shares."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from schemas.experiments import HistoryEntry
from schemas.resources import ResourceEvent
from service.core.errors import ApiError
from service.http.appkeys import LOG, PROJECTOR, WAREHOUSE
from service.http.auth import principal_of
from service.http.bodies import read_body
from service.http.params import (
    DATETIME,
    DEFAULT_PER_PAGE,
    MAX_PER_PAGE,
    PAGE,
    PER_PAGE,
    Parameter,
    Query,
    parse_datetime,
    parse_int,
)
from service.resources.commands import Done, E, MakeEvent, request_ref, submit
from service.resources.fold import Applied, Resources
from service.warehouse.client import WarehouseError

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode

# Fields every event has, left out of a history entry's `changes`.
_ENVELOPE_FIELDS = frozenset({"event_id", "at", "actor", "request", "experiment_id", "model_id", "key_id"})

AS_OF_QUERY = Query((Parameter("as_of", DATETIME, "the resource as it was at this instant (ISO 8601)"),))
# Pages by number only (a history is short, and takes no cursor).
HISTORY_QUERY = Query((dataclasses.replace(PAGE, description="page number"), PER_PAGE))


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=_encode(payload), status=status, content_type="application/json", headers=headers)


def done_response(done: Done, payload: Any, status: int) -> web.Response:
    """The answer to a command; a replayed one says so in a header."""
    headers = {"Idempotent-Replayed": "true"} if done.replayed else None
    return json_response({"data": payload}, status, headers)


async def run_command(request: web.Request, make_event: MakeEvent[E], body: bytes | None = None) -> Done:
    """Submit the event `make_event` builds, as the caller, honouring Idempotency-Key."""
    if body is None:  # a command without a body of its own (DELETE): read only for its fingerprint
        body = await read_body(request, json=False)
    actor = principal_of(request).key.id
    return await submit(request.app[LOG], request.app[PROJECTOR], make_event, actor, request_ref(request, actor, body))


async def warehouse_query(request: web.Request, name: str, parameters: dict[str, Any], shared: bool = False) -> bytes:
    """Run queries/<name>.sql; a warehouse that does not answer is a 503 the client may retry.
    `shared`: copies in flight together run once (Warehouse.query)."""
    try:
        return await request.app[WAREHOUSE].query(name, parameters, shared)
    except WarehouseError as exc:
        raise warehouse_unavailable(exc) from None


class _Total(msgspec.Struct):
    total: int


_total_decoder = msgspec.json.Decoder(_Total)


async def warehouse_total(request: web.Request, name: str, parameters: dict[str, Any]) -> int:
    """Run queries/<name>.sql, a count whose one row is `{"total": N}`."""
    return _total_decoder.decode(await warehouse_query(request, name, parameters)).total


def warehouse_unavailable(error: WarehouseError) -> ApiError:
    """503: the warehouse failed a call; the client may retry."""
    return ApiError(503, "unavailable", f"the warehouse did not answer: {error}", headers={"Retry-After": "1"})


def state_of(request: web.Request) -> Resources:
    return request.app[PROJECTOR].state


def found(resources: Mapping[str, T], resource_id: str, message: str) -> T:
    """The resource, or 404 `not_found` with `message`."""
    resource = resources.get(resource_id)
    if resource is None:
        raise ApiError(404, "not_found", message)
    return resource


def now_or_as_of(
    request: web.Request, resource_id: str, pick: Callable[[Resources], Mapping[str, T]], what: str
) -> tuple[Resources, T]:
    """GET of one resource: as it is now, or with `?as_of=<ISO 8601>` as it was then; with the
    state it was found in (the current one, or the resource's history folded to that instant)."""
    AS_OF_QUERY.check(request.query)
    past = as_of_state(request, resource_id)
    if past is None:
        state = state_of(request)
        return state, found(pick(state), resource_id, f"{what} {resource_id} not found")
    return past, found(pick(past), resource_id, f"{what} {resource_id} did not exist at {request.query['as_of']}")


def as_of_state(request: web.Request, resource_id: str) -> Resources | None:
    """With `?as_of=<ISO 8601>`, the resource's state at that instant; None without it."""
    text = request.query.get("as_of")
    if text is None:
        return None
    instant = parse_datetime("as_of", text)
    return state_of(request).replayed(resource_id, lambda entry: entry.event.at <= instant)


def history_response(request: web.Request, history: list[Applied], what: str) -> web.Response:
    """A resource's events, oldest first, paged with page/per_page."""
    if not history:
        raise ApiError(404, "not_found", f"{what} not found")
    HISTORY_QUERY.check(request.query)
    per_page = parse_int("per_page", request.query.get("per_page"), DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
    page = parse_int("page", request.query.get("page"), 1, 1)
    chosen = history[(page - 1) * per_page : page * per_page]
    entries = [history_entry(entry) for entry in chosen]
    has_more = page * per_page < len(history)
    meta = {"total": len(history), "page": page, "per_page": per_page, "has_more": has_more, "next_cursor": None}
    return json_response({"data": entries, "meta": meta})


def history_entry(entry: Applied) -> HistoryEntry:
    event: ResourceEvent = entry.event
    fields = msgspec.to_builtins(event)
    changes = {k: v for k, v in fields.items() if k not in _ENVELOPE_FIELDS and k != "event"}
    return HistoryEntry(offset=entry.offset, type=type(event).__name__, at=event.at, actor=event.actor, changes=changes)
