"""Endpoints under /api/v1/models: list, CRUD, history and usage statistics (API.md "Model Endpoints")."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from schemas.models import MODEL_STATUSES, ModelInput, ModelOut, ModelStatistics
from schemas.resources import ModelCreated, ModelDeleted, ModelEvent, ModelUpdated
from service.core.errors import bad_parameter
from service.http.auth import requires
from service.http.bodies import Field, check_fields, fields_of, parse_object, read_body, unwrap
from service.http.listing import SortedViews, paginate, time_key
from service.http.params import Parameter, Query, allowed, one_of, page_query, parse_page, takes
from service.http.responses import (
    AS_OF_QUERY,
    HISTORY_QUERY,
    done_response,
    found,
    history_response,
    json_response,
    now_or_as_of,
    run_command,
    state_of,
    warehouse_query,
)
from service.resources.fold import Model, Resources, model_missing
from service.warehouse.client import sql_datetime

routes = web.RouteTableDef()

CREATE_FIELDS = fields_of(ModelInput)
UPDATE_FIELDS = fields_of(ModelInput, optional=True, nonblank=("name",))
FILTERS = {"name": "text", "provider": "text", "type": "text", "status": "text"}
SORTS: dict[str, Callable[[Any], str]] = {
    "name": lambda m: m.name.casefold(),
    "created_at": lambda m: time_key(m.created_at),
    "updated_at": lambda m: time_key(m.updated_at),
}
PERIODS = {
    "1h": dt.timedelta(hours=1),
    "24h": dt.timedelta(days=1),
    "7d": dt.timedelta(days=7),
    "30d": dt.timedelta(days=30),
}

LIST_QUERY = page_query(SORTS, "name", FILTERS, {"status": MODEL_STATUSES})
STATISTICS_QUERY = Query((Parameter("period", one_of(PERIODS, "24h"), "the time before now the statistics cover"),))

_views: SortedViews[Model] = SortedViews(SORTS)


class _StatisticsRow(msgspec.Struct):
    total_requests: int
    successes: int
    avg_latency_ms: float | None
    p99_latency_ms: float | None
    latency_count: int
    total_tokens: float | None
    errors: tuple[list[str], list[int]]


_statistics_decoder = msgspec.json.Decoder(_StatisticsRow)


def model_out(model: Model) -> ModelOut:
    return msgspec.convert(model, ModelOut, from_attributes=True)


def model_in(state: Resources, model_id: str) -> Model:
    return found(state.models, model_id, model_missing(model_id).message)


def model_values(body: bytes, fields: dict[str, Field]) -> dict[str, Any]:
    return check_fields(unwrap(parse_object(body), "model"), fields, "a model")


@routes.get("/api/v1/models")
@requires("read")
@takes(LIST_QUERY)
async def list_models(request: web.Request) -> web.Response:
    query = request.query
    given = LIST_QUERY.check(query)
    sort = LIST_QUERY.sort(query)
    page = parse_page(query, sort)
    name_part = given.get("name", "").casefold()
    exact = {field: given[field] for field in ("provider", "type", "status") if field in given}
    if "status" in exact and exact["status"] not in MODEL_STATUSES:
        raise bad_parameter("filter[status]", f"unknown status; use one of {allowed(MODEL_STATUSES)}")

    def keep(model: Model) -> bool:
        return name_part in model.name.casefold() and all(getattr(model, f) == v for f, v in exact.items())

    state = state_of(request)
    filter_key = tuple(sorted(given.items()))
    rows = _views.rows(
        state, state.version(ModelEvent), state.models.values(), sort.field, keep if given else None, filter_key
    )
    result = paginate(rows, sort, page)
    return json_response({"data": [model_out(m) for m in result.items], "meta": result.meta})


@routes.post("/api/v1/models")
@requires("write")
async def create_model(request: web.Request) -> web.Response:
    body = await read_body(request)
    values = model_values(body, CREATE_FIELDS)
    model_id = "model_" + secrets.token_hex(6)
    done = await run_command(request, lambda env: ModelCreated(**env.fields(), model_id=model_id, **values), body)
    return done_response(done, model_out(done.state.models[done.resource_id]), 201)


@routes.get("/api/v1/models/{id}")
@requires("read")
@takes(AS_OF_QUERY)
async def get_model(request: web.Request) -> web.Response:
    model_id = request.match_info["id"]
    _, model = now_or_as_of(request, model_id, lambda state: state.models, "model")
    return json_response({"data": model_out(model)})


@routes.patch("/api/v1/models/{id}")
@requires("write")
async def update_model(request: web.Request) -> web.Response:
    model_id = request.match_info["id"]
    body = await read_body(request)
    values = model_values(body, UPDATE_FIELDS)
    done = await run_command(request, lambda env: ModelUpdated(**env.fields(), model_id=model_id, **values), body)
    return done_response(done, model_out(done.state.models[model_id]), 200)


@routes.delete("/api/v1/models/{id}")
@requires("write")
async def delete_model(request: web.Request) -> web.Response:
    model_id = request.match_info["id"]
    await run_command(request, lambda env: ModelDeleted(**env.fields(), model_id=model_id))
    return web.Response(status=204)


@routes.get("/api/v1/models/{id}/history")
@requires("read")
@takes(HISTORY_QUERY)
async def model_history(request: web.Request) -> web.Response:
    model_id = request.match_info["id"]
    return history_response(request, state_of(request).history(model_id), f"model {model_id}")


@routes.get("/api/v1/models/{id}/statistics")
@requires("read")
@takes(STATISTICS_QUERY)
async def model_statistics(request: web.Request) -> web.Response:
    """Requests, success rate, latency (exact p99), tokens and errors over a period."""
    STATISTICS_QUERY.check(request.query)
    period = request.query.get("period", "24h")
    if period not in PERIODS:
        raise bad_parameter("period", f"unknown period {period!r}; use one of {', '.join(PERIODS)}")
    model = model_in(state_of(request), request.match_info["id"])
    until = dt.datetime.now(dt.UTC)
    since = until - PERIODS[period]
    params = {
        "model_id": model.id,
        "model_name": model.name,
        "since": sql_datetime(since),
        "until": sql_datetime(until),
    }
    row = _statistics_decoder.decode(await warehouse_query(request, "model_statistics", params))
    error_types, error_counts = row.errors
    statistics = ModelStatistics(
        period=period,
        since=since,
        until=until,
        total_requests=row.total_requests,
        success_rate=row.successes / row.total_requests if row.total_requests else None,
        avg_latency_ms=row.avg_latency_ms,
        p99_latency_ms=row.p99_latency_ms,
        total_tokens=round(row.total_tokens or 0.0),
        error_breakdown=dict(zip(error_types, error_counts, strict=True)),
    )
    return json_response({"data": statistics})
