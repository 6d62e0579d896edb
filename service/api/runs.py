"""Endpoints under /api/v1/runs: lists, a run, its metric history, logs and checkpoints (API.md "Run Endpoints")."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from schemas.common import PageMeta
from schemas.resources import RunEvent
from schemas.runs import LogLine, MetricHistory, MetricPoint
from service.api.run_views import checkpoint_answer, checkpoints_of, number, run_detail, runs_out
from service.core.errors import bad_parameter
from service.http.auth import requires
from service.http.listing import SortedViews, paginate, time_key
from service.http.params import (
    CURSOR,
    DATETIME,
    NO_QUERY,
    PAGES,
    Cursor,
    Parameter,
    Query,
    allowed,
    cursor_time,
    decode_cursor,
    encode_cursor,
    integer,
    one_of,
    page_query,
    parse_datetime,
    parse_int,
    parse_page,
    parse_sort,
    takes,
)
from service.http.responses import found, json_response, state_of, warehouse_query, warehouse_total
from service.resources.fold import RUN_STATUSES, Resources, Run, experiment_missing, run_missing
from service.resources.run_events import LOG_LEVELS
from service.warehouse.client import sql_datetime

routes = web.RouteTableDef()

FILTERS = {"status": "text", "experiment_id": "text"}
SORTS: dict[str, Callable[[Any], str]] = {
    "started_at": lambda r: time_key(r.started_at),
    "created_at": lambda r: time_key(r.created_at),
    "updated_at": lambda r: time_key(r.updated_at),
    "completed_at": lambda r: time_key(r.completed_at),
    "status": lambda r: r.status,
}
DEFAULT_MAX_POINTS, MAX_POINTS_LIMIT = 1_000, 100_000
DEFAULT_LOG_LINES, MAX_LOG_LINES = 100, 1_000
MAX_TAIL = 10_000
LOG_SORT = "timestamp"  # log pages are in time order only; the cursor names it
LOG_ORDER = parse_sort(LOG_SORT, (LOG_SORT,), LOG_SORT)
CHECKPOINT_ORDER = parse_sort("reported", ("reported",), "reported")  # checkpoints come in one order
LIST_QUERY = page_query(SORTS, "-started_at", FILTERS, {"status": RUN_STATUSES})
METRICS_QUERY = Query(
    (Parameter("max_points", integer(2, MAX_POINTS_LIMIT, DEFAULT_MAX_POINTS), "down-sample to at most this many"),)
)
LOGS_QUERY = Query(
    (
        Parameter("level", one_of(LOG_LEVELS, LOG_LEVELS[0]), "this level and the more severe ones"),
        Parameter("since", DATETIME, "lines at or after this time"),
        Parameter("tail", integer(1, MAX_TAIL), "the most recent N lines at once (no cursor, no per_page)"),
        Parameter("per_page", integer(1, MAX_LOG_LINES, DEFAULT_LOG_LINES)),
        CURSOR,
    )
)

_views: SortedViews[Run] = SortedViews(SORTS)


class _HistoryRow(msgspec.Struct):
    position: int
    step: float | None
    epoch: float | None
    value: float
    timestamp: dt.datetime
    total: int


class _LogRow(msgspec.Struct):
    timestamp: dt.datetime
    level: str
    message: str
    log_partition: int
    log_offset: int
    log_index: int

    def position(self) -> str:
        """Where the line is in the log, as a log cursor keeps it."""
        return f"{self.log_partition}:{self.log_offset}:{self.log_index}"


_history_decoder = msgspec.json.Decoder(_HistoryRow)
_log_decoder = msgspec.json.Decoder(_LogRow)


def run_in(state: Resources, run_id: str) -> Run:
    return found(state.runs, run_id, run_missing(run_id).message)


@routes.get("/api/v1/runs")
@requires("read")
@takes(LIST_QUERY)
async def list_runs(request: web.Request) -> web.Response:
    return await _list(request, LIST_QUERY.check(request.query))


@routes.get("/api/v1/experiments/{id}/runs")
@requires("read")
@takes(LIST_QUERY)
async def list_experiment_runs(request: web.Request) -> web.Response:
    experiment_id = request.match_info["id"]
    found(state_of(request).experiments, experiment_id, experiment_missing(experiment_id).message)
    given = LIST_QUERY.check(request.query)
    if given.setdefault("experiment_id", experiment_id) != experiment_id:
        raise bad_parameter("filter[experiment_id]", "contradicts the experiment in the path")
    return await _list(request, given)


async def _list(request: web.Request, given: dict[str, str]) -> web.Response:
    query = request.query
    sort = LIST_QUERY.sort(query)
    page = parse_page(query, sort)
    keep = _filter(given)
    state = state_of(request)
    filter_key = tuple(sorted(given.items()))
    rows = _views.rows(state, state.version(RunEvent), state.runs.values(), sort.field, keep, filter_key)
    result = paginate(rows, sort, page)
    return json_response({"data": await runs_out(request, result.items), "meta": result.meta})


def _filter(given: dict[str, str]) -> Callable[[Run], bool] | None:
    status, experiment_id = given.get("status"), given.get("experiment_id")
    if status is not None and status not in RUN_STATUSES:
        raise bad_parameter("filter[status]", f"unknown status {status!r}; use one of {allowed(RUN_STATUSES)}")
    if status is not None and experiment_id is not None:
        return lambda r: r.status == status and r.experiment_id == experiment_id
    if status is not None:
        return lambda r: r.status == status
    if experiment_id is not None:
        return lambda r: r.experiment_id == experiment_id
    return None


@routes.get("/api/v1/runs/{id}")
@requires("read")
@takes(NO_QUERY)
async def get_run(request: web.Request) -> web.Response:
    NO_QUERY.check(request.query)
    run = run_in(state_of(request), request.match_info["id"])
    return json_response({"data": await run_detail(request, run)})


@routes.get("/api/v1/runs/{id}/checkpoints")
@requires("read")
@takes(PAGES)
async def list_checkpoints(request: web.Request) -> web.Response:
    """Every checkpoint the run reported or uploaded, in the order reported; paged like every list.

    The cursor holds the last checkpoint's place in that order: checkpoints reported
    later go to the end, so they do not shift the pages already read."""
    PAGES.check(request.query)
    page = parse_page(request.query, CHECKPOINT_ORDER)
    run = run_in(state_of(request), request.match_info["id"])
    rows = [(f"{index:010d}", c.id, c) for index, c in enumerate(await checkpoints_of(request, run))]
    result = paginate(rows, CHECKPOINT_ORDER, page)
    return json_response({"data": [checkpoint_answer(c) for c in result.items], "meta": result.meta})


@routes.get("/api/v1/runs/{id}/metrics/{name}")
@requires("read")
@takes(METRICS_QUERY)
async def metric_history(request: web.Request) -> web.Response:
    """One metric's history (step, epoch, value, timestamp), down-sampled to `max_points` for charts."""
    METRICS_QUERY.check(request.query)
    run = run_in(state_of(request), request.match_info["id"])
    name = request.match_info["name"]
    max_points = parse_int("max_points", request.query.get("max_points"), DEFAULT_MAX_POINTS, 2, MAX_POINTS_LIMIT)
    params = {"experiment_id": run.experiment_id, "run_id": run.id, "name": name, "max_points": max_points}
    body = await warehouse_query(request, "run_metric_history", params)
    rows = [_history_decoder.decode(line) for line in body.splitlines() if line]
    total = rows[0].total if rows else 0
    points = [
        MetricPoint(
            step=None if row.step is None else number(row.step),
            epoch=None if row.epoch is None else number(row.epoch),
            value=row.value,
            timestamp=row.timestamp,
        )
        for row in rows
    ]
    history = MetricHistory(run_id=run.id, name=name, total_points=total, downsampled=total > max_points, points=points)
    return json_response({"data": history})


@routes.get("/api/v1/runs/{id}/logs")
@requires("read")
@takes(LOGS_QUERY)
async def run_logs(request: web.Request) -> web.Response:
    """Log lines oldest first: at or above `level`, since a time; `tail` gives the most recent N,
    else pages of `per_page` lines follow `meta.next_cursor`."""
    query = request.query
    LOGS_QUERY.check(query)
    run = run_in(state_of(request), request.match_info["id"])
    level = query.get("level", LOG_LEVELS[0])
    if level not in LOG_LEVELS:
        raise bad_parameter("level", f"unknown level {level!r}; use one of {allowed(LOG_LEVELS)}")
    params: dict[str, Any] = {
        "experiment_id": run.experiment_id,
        "run_id": run.id,
        "min_severity": LOG_LEVELS.index(level) + 1,
        "since": sql_datetime(parse_datetime("since", query["since"])) if "since" in query else None,
    }
    if "tail" in query:
        if "cursor" in query or "per_page" in query:
            raise bad_parameter("tail", "gives the most recent lines at once; it takes no cursor or per_page")
        params["limit"] = parse_int("tail", query["tail"], 0, 1, MAX_TAIL)
        rows = _log_rows(await warehouse_query(request, "run_logs_tail", params))[::-1]
        meta = PageMeta(
            total=await _log_total(request, params),
            page=None,
            per_page=params["limit"],
            next_cursor=None,
            has_more=False,
        )
        return json_response({"data": [_log_line(row) for row in rows], "meta": meta})
    per_page = parse_int("per_page", query.get("per_page"), DEFAULT_LOG_LINES, 1, MAX_LOG_LINES)
    cursor = decode_cursor(query["cursor"], LOG_ORDER) if "cursor" in query else None
    params["cursor_time"] = cursor_time(cursor.value) if cursor is not None else None
    params.update(_log_position(cursor.id) if cursor is not None else _LOG_START)
    params["limit"] = per_page + 1  # one more tells whether another page follows
    rows = _log_rows(await warehouse_query(request, "run_logs", params))
    has_more = len(rows) > per_page
    rows = rows[:per_page]
    next_cursor = None
    if has_more:
        last = rows[-1]
        next_cursor = encode_cursor(Cursor(LOG_SORT, sql_datetime(last.timestamp), last.position(), ""))
    total = await _log_total(request, params)
    meta = PageMeta(total=total, page=None, per_page=per_page, next_cursor=next_cursor, has_more=has_more)
    return json_response({"data": [_log_line(row) for row in rows], "meta": meta})


_LOG_START = {"cursor_partition": 0, "cursor_offset": 0, "cursor_index": 0}
_LOG_POSITION = re.compile(r"([0-9]{1,10}):([0-9]{1,20}):([0-9]{1,10})")


def _log_position(text: str) -> dict[str, int]:
    """A log cursor's position (`partition:offset:index`); 422 when it is not one."""
    match = _LOG_POSITION.fullmatch(text)
    numbers = [int(part) for part in match.groups()] if match else []
    if not numbers or numbers[0] >= 2**32 or numbers[1] >= 2**64 or numbers[2] >= 2**32:
        raise bad_parameter("cursor", "is not a cursor this API gave out")
    return dict(zip(_LOG_START, numbers, strict=True))


async def _log_total(request: web.Request, params: dict[str, Any]) -> int:
    """How many lines match the level and `since` (every page), counted when the page is read."""
    counted = {name: params[name] for name in ("experiment_id", "run_id", "min_severity", "since")}
    return await warehouse_total(request, "run_logs_count", counted)


def _log_rows(body: bytes) -> list[_LogRow]:
    return [_log_decoder.decode(line) for line in body.splitlines() if line]


def _log_line(row: _LogRow) -> LogLine:
    return LogLine(timestamp=row.timestamp, level=row.level, message=row.message)
