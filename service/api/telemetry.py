"""Endpoints under /api/v1/telemetry: ingest, event pages and aggregates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from schemas.common import PageMeta
from schemas.telemetry import AggregatePoint
from service.core import metrics
from service.core.errors import ApiError, bad_parameter
from service.http.appkeys import INGESTOR, SETTINGS
from service.http.auth import principal_of, requires, take
from service.http.bodies import read_body
from service.http.params import (
    Cursor,
    Parameter,
    Query,
    allowed,
    cursor_time,
    encode_cursor,
    integer,
    one_of,
    page_query,
    parse_datetime,
    parse_filters,
    parse_int,
    parse_page,
    snapshot_now,
    takes,
)
from service.http.responses import json_response, warehouse_query, warehouse_total
from service.warehouse.client import sql_datetime
from service.warehouse.event_rows import EventRow, stored_event

routes = web.RouteTableDef()

FILTERS = {
    "event_name": "text",
    "experiment_id": "text",
    "run_id": "text",
    "model": "text",
    "after": "time",
    "before": "time",
}
EVENT_SORTS = ("timestamp", "received_at")
AGGREGATES = ("count", "avg", "sum", "min", "max", "p50", "p95", "p99")
QUANTILES = {"p50": 0, "p95": 1, "p99": 2}
INTERVALS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
GROUP_COLUMNS = ("event_name", "experiment_id", "run_id", "model")
MAX_POINTS = 100_000
# What `_group_parameters` accepts: nothing, a column, or metadata.<key>.
GROUP_BY_PATTERN = "^(" + "|".join(GROUP_COLUMNS) + r"|metadata\..+)?$"


def _aggregate_query(metric_name: str, metric_description: str, agg_required: bool) -> Query:
    """The parameters `_aggregate` reads; the measurement is `metric` or `agg_field`, by endpoint."""
    return Query(
        (
            Parameter("agg", one_of(AGGREGATES), "the aggregate function", required=agg_required),
            Parameter(metric_name, {"type": "string"}, metric_description),
            Parameter("group_by", {"type": "string", "pattern": GROUP_BY_PATTERN}, "a column or metadata.<key>"),
            Parameter("interval", one_of(INTERVALS), "time bucket; none: one bucket"),
            Parameter("limit", integer(1, MAX_POINTS, MAX_POINTS), "at most this many points"),
        ),
        FILTERS,
    )


EVENTS_PAGE_QUERY = page_query(EVENT_SORTS, "-timestamp", FILTERS)
# With `agg`, GET /telemetry/events answers aggregates instead of a page.
EVENTS_AGGREGATE_QUERY = _aggregate_query("agg_field", "the measurement to aggregate (not needed for count)", False)
AGGREGATE_QUERY = _aggregate_query("metric", "the measurement to aggregate (not needed for count)", True)


class _BasicRow(msgspec.Struct):
    bucket: dt.datetime | None
    grp: str
    n: int
    first: dt.datetime
    sum: float | None
    min: float | None
    max: float | None
    avg: float | None


class _QuantileRow(msgspec.Struct):
    bucket: dt.datetime | None
    grp: str
    n: int
    first: dt.datetime
    quantiles: list[float | None]


_ROW_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(kind) for kind in (EventRow, _BasicRow, _QuantileRow)
}


def _lines(body: bytes, kind: type[Any]) -> list[Any]:
    decoder = _ROW_DECODERS[kind]  # built once: a decoder per call costs more than the rows
    return [decoder.decode(line) for line in body.splitlines() if line]


def filter_parameters(query: Mapping[str, str]) -> dict[str, Any]:
    """The warehouse parameters of `filter[...]`; NULL disables a filter."""
    return filter_values(parse_filters(query, FILTERS), "filter[{}]")


def filter_values(given: Mapping[str, str | None], label: str) -> dict[str, Any]:
    """The warehouse parameters of the FILTERS `given` (None or absent: off); a bad
    time is a 422 naming the filter as `label` formats it."""
    params: dict[str, Any] = {}
    for name, kind in FILTERS.items():
        value = given.get(name)
        if value is not None and kind == "time":
            params[name] = sql_datetime(parse_datetime(label.format(name), value))
        else:
            params[name] = value
    return params


def scoped_idempotency_key(request: web.Request) -> str | None:
    """The request's Idempotency-Key within its caller's: keys of two clients never collide."""
    key = request.headers.get("Idempotency-Key")
    return None if key is None else f"{principal_of(request).key.id}:{key}"


@routes.post("/api/v1/telemetry/events")
@requires("ingest", limit="ingest")
async def ingest_events(request: web.Request) -> web.Response:
    """Validate a batch and append it to the log; 202 once it is durable."""
    body = await read_body(request, request.app[SETTINGS].max_body_bytes)
    try:
        answer = await request.app[INGESTOR].ingest(
            body,
            scoped_idempotency_key(request),
            lambda events: take(request, "ingest", events),
            actor=principal_of(request).key.id,
        )
    except ApiError as error:
        metrics.INGEST_BATCHES.labels(str(error.status)).inc()
        raise
    metrics.INGEST_BATCHES.labels(str(answer.status)).inc()
    response = web.Response(body=answer.body, status=answer.status, content_type="application/json")
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@routes.get("/api/v1/telemetry/events")
@requires("read")
@takes(EVENTS_PAGE_QUERY + EVENTS_AGGREGATE_QUERY)
async def list_events(request: web.Request) -> web.Response:
    """A page of events, or aggregates of them when `agg` is given."""
    query = request.query
    if "agg" in query:
        EVENTS_AGGREGATE_QUERY.check(query)
        return json_response(
            {"data": await _aggregate(request, query.get("agg_field"), query["agg"], query, "agg_field")}
        )
    EVENTS_PAGE_QUERY.check(query)
    sort = EVENTS_PAGE_QUERY.sort(query)
    page = parse_page(query, sort)
    params = filter_parameters(query)
    cursor = page.cursor
    params.update(
        sort_column=sort.field,
        snapshot=cursor_time(cursor.snapshot) if cursor else snapshot_now(),
        cursor_time=cursor_time(cursor.value) if cursor else None,
        cursor_id=cursor.id if cursor else "",
        limit=page.per_page + 1,
        offset=page.offset,
    )
    body = await warehouse_query(
        request, "telemetry_events_desc" if sort.descending else "telemetry_events_asc", params
    )
    rows: list[EventRow] = _lines(body, EventRow)
    has_more = len(rows) > page.per_page
    rows = rows[: page.per_page]
    next_cursor = None
    if has_more:
        last = rows[-1]
        key = last.timestamp if sort.field == "timestamp" else last.received_at
        next_cursor = encode_cursor(Cursor(str(sort), sql_datetime(key), last.id, params["snapshot"]))
    total = await count_events(request, params)
    meta = PageMeta(per_page=page.per_page, page=page.page, total=total, has_more=has_more, next_cursor=next_cursor)
    return json_response({"data": [stored_event(r) for r in rows], "meta": meta})


async def count_events(request: web.Request, parameters: Mapping[str, Any]) -> int:
    """How many events match the filters and `snapshot` among `parameters`."""
    count_params = {k: parameters[k] for k in (*FILTERS, "snapshot")}
    return await warehouse_total(request, "telemetry_events_count", count_params)


@routes.get("/api/v1/telemetry/aggregate")
@requires("read")
@takes(AGGREGATE_QUERY)
async def aggregate(request: web.Request) -> web.Response:
    """One measurement aggregated per time bucket and group."""
    query = request.query
    AGGREGATE_QUERY.check(query)
    if "agg" not in query:
        raise bad_parameter("agg", f"is required; use one of {allowed(AGGREGATES)}")
    points = await _aggregate(request, query.get("metric"), query["agg"], query, "metric")
    meta = {
        "metric": query.get("metric"),
        "agg": query["agg"],
        "interval": query.get("interval"),
        "group_by": query.get("group_by"),
        "points": len(points),
    }
    return json_response({"data": points, "meta": meta})


def group_query(group_by: str, group_key: str) -> dict[str, object]:
    """The parameters of the telemetry_aggregate and telemetry_quantiles queries for a grouping.

    `group_by` is '', 'metadata' or one of GROUP_COLUMNS (an allow-list, see
    `_group_parameters`). The branch not taken still needs a valid identifier.
    """
    return {
        "grouped": group_by != "",
        "by_metadata": group_by == "metadata",
        "group_column": group_by if group_by in GROUP_COLUMNS else "event_name",
        "group_key": group_key,
    }


def _group_parameters(group_by: str | None) -> tuple[str, str]:
    if group_by is None or group_by == "":
        return "", ""
    if group_by in GROUP_COLUMNS:
        return group_by, ""
    if group_by.startswith("metadata.") and len(group_by) > len("metadata."):
        return "metadata", group_by[len("metadata.") :]
    raise bad_parameter(
        "group_by", f"cannot group by {group_by!r}; use one of {allowed(GROUP_COLUMNS)} or metadata.<key>"
    )


def _start(row: _BasicRow | _QuantileRow) -> dt.datetime:
    """Where a point starts: its interval's start, or without an interval the `after`
    filter, else the time of its first event (never null: clients parse every timestamp)."""
    return row.bucket if row.bucket is not None else row.first


async def _aggregate(
    request: web.Request, metric: str | None, agg: str, query: Mapping[str, str], metric_name: str
) -> list[AggregatePoint]:
    if agg not in AGGREGATES:
        raise bad_parameter("agg", f"unknown aggregate {agg!r}; use one of {', '.join(AGGREGATES)}")
    if agg != "count" and not metric:
        raise bad_parameter(metric_name, f"is required for agg={agg}")
    interval = query.get("interval")
    if interval is not None and interval not in INTERVALS:
        raise bad_parameter("interval", f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}")
    group_by, group_key = _group_parameters(query.get("group_by"))
    params = filter_parameters(query)
    limit = parse_int("limit", query.get("limit"), MAX_POINTS, 1, MAX_POINTS)
    params.update(metric=metric or "", interval_seconds=INTERVALS[interval] if interval else 0, limit=limit)
    params.update(group_query(group_by, group_key))
    grouped = group_by != ""
    # telemetry_points holds one metric's values apart; a count of every event, or a group
    # by a metadata key, needs whole events.
    suffix = "_events" if group_by == "metadata" or not metric else ""
    if agg in QUANTILES:
        index = QUANTILES[agg]
        # Shared: dashboards polling the same chart ask the same query together.
        body = await warehouse_query(request, "telemetry_quantiles" + suffix, params, shared=True)
        rows: list[_QuantileRow] = _lines(body, _QuantileRow)
        return [
            AggregatePoint(timestamp=_start(r), value=r.quantiles[index], count=r.n, group=r.grp if grouped else None)
            for r in rows
        ]
    basic_body = await warehouse_query(request, "telemetry_aggregate" + suffix, params, shared=True)
    basic: list[_BasicRow] = _lines(basic_body, _BasicRow)
    return [
        AggregatePoint(
            timestamp=_start(r),
            value=float(r.n) if agg == "count" else getattr(r, agg),
            count=r.n,
            group=r.grp if grouped else None,
        )
        for r in basic
    ]
