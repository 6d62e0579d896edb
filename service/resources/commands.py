"""Running a command: check, append one resource event, wait for the fold, answer.

`submit` is the one path every change takes (REST handlers, the CLI's key
commands, the first-run admin key). It gives read-your-writes and Idempotency-Key
semantics:

- a retry with the same key returns the first answer, rebuilt from the state
  right after the first request's event, and appends nothing;
- the key travels inside the event, so the fold recognises a duplicate even when
  the retry raced the first attempt or reached another API process;
- when the fold refuses the event (another writer won), the answer is its 409.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from schemas.resources import AnyResourceEvent, RequestRef
from service.core.errors import ApiError, validation_error
from service.log.interface import RESOURCES_TOPIC, EventLog, LogUnavailable, Record
from service.resources.fold import Rejection, RequestSeen, Resources, event_encoder
from service.resources.projector import Projector, ProjectorStalled

E = TypeVar("E", bound=AnyResourceEvent)
# How a command makes its event; a coroutine when that needs I/O (a statistical test
# reads telemetry), which then runs only when the request is not a retry.
MakeEvent = Callable[["Envelope"], E | Awaitable[E]]

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255

_STATUS = {"not_found": 404, "conflict": 409}


@dataclass(frozen=True, slots=True)
class Envelope:
    """The fields every event of one command shares."""

    event_id: str
    at: dt.datetime
    actor: str
    request: RequestRef | None

    def fields(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "at": self.at, "actor": self.actor, "request": self.request}


@dataclass(frozen=True, slots=True)
class Done:
    """A command's outcome: the resource it changed and the state right after its event."""

    resource_id: str
    state: Resources
    replayed: bool


def envelope(actor: str, request: RequestRef | None = None) -> Envelope:
    return Envelope(uuid.uuid4().hex, dt.datetime.now(dt.UTC), actor, request)


def request_ref(request: web.Request, actor: str, body: bytes) -> RequestRef | None:
    """The request's Idempotency-Key, scoped to the caller, with its fingerprint."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise validation_error(
            f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
            {IDEMPOTENCY_HEADER: [f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters"]},
        )
    fingerprint = hashlib.sha256(b"%s %s\n%s" % (request.method.encode(), request.path.encode(), body)).hexdigest()
    return RequestRef(f"{actor}:{key}", fingerprint)


def different_request() -> ApiError:
    """422: a retry whose Idempotency-Key was first used with another request."""
    return validation_error(
        f"this {IDEMPOTENCY_HEADER} was used with a different request",
        {IDEMPOTENCY_HEADER: ["was used with a different request"]},
    )


def resource_record(event: AnyResourceEvent) -> Record:
    return Record(RESOURCES_TOPIC, event.resource_id.encode(), event_encoder.encode(event))


def refusal(rejection: Rejection) -> ApiError:
    if rejection.code == "invalid":  # the fold could not read or apply the event: our fault, not the caller's
        return ApiError(500, "internal_error", rejection.message)
    return ApiError(_STATUS.get(rejection.code, 409), rejection.code, rejection.message)


async def submit(
    log: EventLog, projector: Projector, make_event: MakeEvent[E], actor: str, ref: RequestRef | None = None
) -> Done:
    """Check and append the event `make_event` builds; return once this process has folded it.

    Copies of one keyed request in this process run one after the other: the first
    acts, the rest replay it. Copies on other processes each append, and the fold
    keeps the first and answers the rest as replays of it."""
    if ref is None:
        return await _submit(log, projector, make_event, actor, None)
    async with projector.requests_in_flight.hold(ref.key):
        return await _submit(log, projector, make_event, actor, ref)


async def _submit(
    log: EventLog, projector: Projector, make_event: MakeEvent[E], actor: str, ref: RequestRef | None
) -> Done:
    if ref is not None and (seen := projector.state.requests.get(ref.key)) is not None:
        return _replay(projector, seen, ref)
    made = make_event(envelope(actor, ref))
    event: E = await made if inspect.isawaitable(made) else made
    rejection = projector.state.check(event)
    if rejection is not None:
        raise refusal(rejection)
    try:
        [(_, offset)] = await log.append([resource_record(event)])
        rejection = await projector.applied(offset)
    except LogUnavailable as exc:
        raise ApiError(
            503, "unavailable", f"the change was not recorded, retry: {exc}", headers={"Retry-After": "1"}
        ) from None
    except ProjectorStalled as exc:
        raise ApiError(
            503,
            "unavailable",
            f"the change was recorded but is not visible yet; retry with the same {IDEMPOTENCY_HEADER}: {exc}",
            headers={"Retry-After": "1"},
        ) from None
    if rejection is not None:
        if rejection.code == "duplicate" and rejection.first is not None and ref is not None:
            return _replay(projector, rejection.first, ref)
        raise refusal(rejection)
    return Done(event.resource_id, state_after(projector.state, event.resource_id, offset), replayed=False)


def _replay(projector: Projector, seen: RequestSeen, ref: RequestRef) -> Done:
    if seen.fingerprint != ref.fingerprint:
        raise different_request()
    if seen.rejection is not None:
        raise refusal(seen.rejection)
    return Done(seen.resource_id, state_after(projector.state, seen.resource_id, seen.offset), replayed=True)


def state_after(state: Resources, resource_id: str, offset: int) -> Resources:
    """The resource as it was right after the event at `offset`, whatever came later."""
    return state.replayed(resource_id, lambda entry: entry.offset <= offset)
