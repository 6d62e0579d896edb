"""Endpoints of statistical results (API.md "Statistical Results Endpoints"): run a test, list, get.

A test reads its samples from the warehouse with one query (queries/statistical_samples.sql),
runs off the event loop, and its result is recorded as a `StatisticalResultRecorded`
resource event; lists and gets are the projection of those events. Because the event
is built only when the request is not a retry, an Idempotency-Key replays the first
result without reading telemetry again.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
from aiohttp import web

from schemas.resources import StatisticalResultEvent, StatisticalResultRecorded
from schemas.statistics import TEST_TYPES, StatisticalOptions, StatisticalResultOut, StatisticalTestInput
from service.api.experiments import experiment_in
from service.core.errors import ApiError, bad_parameter, validation_error
from service.http.auth import requires
from service.http.bodies import BLANK, Field, check_fields, fields_of, parse_object, read_body, unwrap
from service.http.listing import SortedViews, paginate, time_key
from service.http.params import NO_QUERY, Query, allowed, page_query, parse_datetime, parse_page, takes
from service.http.responses import done_response, found, json_response, run_command, state_of, warehouse_query
from service.resources.commands import Envelope
from service.resources.fold import StatisticalResult
from service.statistics.analysis import PROCEDURES, group_source, label_key, resolve_options, run_test
from service.statistics.tests import Group, StatisticsError

routes = web.RouteTableDef()

TEST_FIELDS = {**fields_of(StatisticalTestInput), "options": Field(dict[str, Any])}
OPTION_FIELDS = fields_of(StatisticalOptions)
FILTERS = {
    "test_type": "text",
    "experiment_id": "text",
    "metric": "text",
    "created_after": "time",
    "created_before": "time",
}
EXPERIMENT_FILTERS = {name: kind for name, kind in FILTERS.items() if name != "experiment_id"}
# After every hex digit: results without a p-value (bootstrap) sort last.
NO_P_VALUE = "~"


def _p_value_key(result: StatisticalResult) -> str:
    """A p-value (≥ 0) as text that sorts like the number: its IEEE 754 bytes, big-endian."""
    p = result.outcome.p_value
    return NO_P_VALUE if p is None else struct.pack(">d", p).hex()


SORTS: dict[str, Callable[[Any], str]] = {
    "created_at": lambda r: time_key(r.created_at),
    "test_type": lambda r: r.outcome.test_type,
    "experiment_id": lambda r: r.experiment_id,
    "metric": lambda r: r.outcome.metric or "",
    "p_value": _p_value_key,
}

LIST_QUERY = page_query(SORTS, "-created_at", FILTERS, {"test_type": TEST_TYPES})
EXPERIMENT_LIST_QUERY = page_query(SORTS, "-created_at", EXPERIMENT_FILTERS, {"test_type": TEST_TYPES})

_views: SortedViews[StatisticalResult] = SortedViews(SORTS)


class _SampleRow(msgspec.Struct):
    grp: str
    n: int
    values: bytes  # little-endian float64s, base64 in the JSON (see statistical_samples.sql)
    labels: list[str]
    times: bytes  # little-endian int64 Unix microseconds, one per value or label
    positions: tuple[list[int], list[int]]


_sample_rows = msgspec.json.Decoder(_SampleRow)


def result_out(result: StatisticalResult) -> StatisticalResultOut:
    return StatisticalResultOut(
        **msgspec.structs.asdict(result.outcome),
        id=result.id,
        experiment_id=result.experiment_id,
        options=result.options,
        telemetry_position=result.telemetry_position,
        created_at=result.created_at,
    )


def refused(error: StatisticsError) -> ApiError:
    return validation_error(error.message, {error.field: [error.message]})


@routes.post("/api/v1/statistical-results")
@requires("write")
async def create_statistical_result(request: web.Request) -> web.Response:
    """Run a statistical test on an experiment's telemetry and record its result."""
    body = await read_body(request)
    values = check_fields(unwrap(parse_object(body), "test"), TEST_FIELDS, "a statistical test")
    test_type: str = values["test_type"]
    given = check_fields(values.get("options", {}), OPTION_FIELDS, "the options", prefix="options.")
    try:
        options = resolve_options(test_type, given)
    except StatisticsError as error:
        raise refused(error) from None
    metric: str | None = values.get("metric")
    if metric is None and PROCEDURES[test_type].numeric:
        raise validation_error(f"Metric is required for {test_type}", {"metric": [BLANK]})
    groups: list[str] | None = values.get("groups")
    if groups is not None and len(set(groups)) < len(groups):
        raise validation_error("Groups are named more than once", {"groups": ["must not repeat a group"]})
    experiment_id: str = values["experiment_id"]
    stat_id = "stat_" + secrets.token_hex(6)

    async def make_event(env: Envelope) -> StatisticalResultRecorded:
        # Checked here, not before: a retry replays even once the experiment is gone.
        experiment_in(state_of(request), experiment_id)
        params = sample_parameters(test_type, experiment_id, metric, groups, options)
        rows = await warehouse_query(request, "statistical_samples", params)
        try:
            outcome, position = await asyncio.to_thread(_run, rows, test_type, metric, groups, options)
        except StatisticsError as error:
            raise refused(error) from None
        return StatisticalResultRecorded(
            **env.fields(),
            stat_id=stat_id,
            experiment_id=experiment_id,
            options=options,
            outcome=outcome,
            telemetry_position=position,
        )

    done = await run_command(request, make_event, body)
    return done_response(done, result_out(done.state.statistical_results[done.resource_id]), 201)


def sample_parameters(
    test_type: str, experiment_id: str, metric: str | None, groups: list[str] | None, options: StatisticalOptions
) -> dict[str, Any]:
    """The parameters of statistical_samples.sql for a test."""
    column, key = group_source(options.group_by)
    numeric = PROCEDURES[test_type].numeric
    return {
        "experiment_id": experiment_id,
        "metric": metric or "",
        "collect_values": numeric,
        "group_column": column,
        "group_key": key,
        "groups": groups or [],
        "label_key": label_key(test_type, options),
        "label_required": not numeric,
    }


def _run(
    body: bytes, test_type: str, metric: str | None, wanted: list[str] | None, options: StatisticalOptions
) -> tuple[Any, dict[int, int]]:
    """Decode the samples, run the test; in a thread, as both take a while on large groups."""
    rows = {row.grp: row for row in (_sample_rows.decode(line) for line in body.splitlines() if line)}
    names = wanted if wanted is not None else sorted(rows)
    what = f"values of {metric}" if metric else "events"
    if not names:
        raise StatisticsError("metric", f"the experiment has no {what} in any group by {options.group_by}")
    missing = [name for name in names if name not in rows]
    if missing:
        present = ", ".join(repr(name) for name in sorted(rows)) or "none"
        raise StatisticsError(
            "groups",
            f"no {what} for group {missing[0]!r} (grouped by {options.group_by}); groups with samples: {present}",
        )
    groups = [in_sample_order(name, rows[name]) for name in names]
    position: dict[int, int] = {}
    for name in names:
        for partition, offset in zip(*rows[name].positions, strict=True):
            position[partition] = max(offset, position.get(partition, -1))
    return run_test(test_type, metric, groups, options), position


def in_sample_order(name: str, row: _SampleRow) -> Group:
    """A group's samples in the documented order: by timestamp, then by the value's bits.

    The warehouse returns them in the order its parts and threads were read, which changes
    with inserts and merges; a seeded bootstrap or permutation resamples positions, and float
    sums depend on order, so only a fixed order lets seed and data reproduce a result bit for
    bit. Samples tied on both keys are the same value, interchangeable for every test (paired
    tests match labels by key, category tests count them)."""
    return sorted_samples(
        name, np.frombuffer(row.values, dtype="<f8"), row.labels, np.frombuffer(row.times, dtype="<i8")
    )


def sorted_samples(name: str, values: np.ndarray, labels: list[str], times: np.ndarray) -> Group:
    """`values` and `labels` (either may be empty) sorted together by `times`, then the values' bits."""
    # Timestamps mostly arrive as a few sorted runs (one per part), which a stable sort merges in
    # milliseconds; np.lexsort takes ~0.4 s per million whatever the data.
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    if values.size and bool((ordered[1:] == ordered[:-1]).any()):
        # Ties (events of one batch without timestamps share the receive time): by the values'
        # bits first, then stably by time, which keeps the bits' order within a timestamp.
        by_bits = np.argsort(values.view("<i8"))
        order = by_bits[np.argsort(times[by_bits], kind="stable")]
    return Group(name, values[order] if values.size else values, [labels[i] for i in order] if labels else labels)


@routes.get("/api/v1/statistical-results")
@requires("read")
@takes(LIST_QUERY)
async def list_statistical_results(request: web.Request) -> web.Response:
    """Recorded results: filter by test_type, experiment_id, metric, creation time; sort; pages or cursor."""
    return _list(request, LIST_QUERY, {})


@routes.get("/api/v1/experiments/{id}/statistical-results")
@requires("read")
@takes(EXPERIMENT_LIST_QUERY)
async def list_experiment_statistical_results(request: web.Request) -> web.Response:
    """The results recorded on one experiment (also after it was deleted)."""
    experiment_id = request.match_info["id"]
    state = state_of(request)
    if experiment_id not in state.experiments and not state.history(experiment_id):
        raise ApiError(404, "not_found", f"experiment {experiment_id} not found")
    return _list(request, EXPERIMENT_LIST_QUERY, {"experiment_id": experiment_id})


@routes.get("/api/v1/statistical-results/{id}")
@requires("read")
@takes(NO_QUERY)
async def get_statistical_result(request: web.Request) -> web.Response:
    NO_QUERY.check(request.query)
    result_id = request.match_info["id"]
    result = found(state_of(request).statistical_results, result_id, f"statistical result {result_id} not found")
    return json_response({"data": result_out(result)})


def _list(request: web.Request, declared: Query, fixed: dict[str, str]) -> web.Response:
    query = request.query
    given = {**declared.check(query), **fixed}
    sort = declared.sort(query)
    page = parse_page(query, sort)
    keep = _filter(given)
    state = state_of(request)
    rows = _views.rows(
        state,
        state.version(StatisticalResultEvent),
        state.statistical_results.values(),
        sort.field,
        keep,
        tuple(sorted(given.items())),
    )
    result = paginate(rows, sort, page)
    return json_response({"data": [result_out(r) for r in result.items], "meta": result.meta})


def _filter(given: dict[str, str]) -> Callable[[StatisticalResult], bool] | None:
    checks: list[Callable[[StatisticalResult], bool]] = []
    if "test_type" in given:
        test_type = given["test_type"]
        if test_type not in TEST_TYPES:
            raise bad_parameter(
                "filter[test_type]", f"unknown test type {test_type!r}; use one of {allowed(TEST_TYPES)}"
            )
        checks.append(lambda r: r.outcome.test_type == test_type)
    if "experiment_id" in given:
        experiment_id = given["experiment_id"]
        checks.append(lambda r: r.experiment_id == experiment_id)
    if "metric" in given:
        metric = given["metric"]
        checks.append(lambda r: r.outcome.metric == metric)
    if "created_after" in given:
        after = parse_datetime("filter[created_after]", given["created_after"])
        checks.append(lambda r: r.created_at > after)
    if "created_before" in given:
        before = parse_datetime("filter[created_before]", given["created_before"])
        checks.append(lambda r: r.created_at < before)
    if not checks:
        return None
    return lambda r: all(check(r) for check in checks)
