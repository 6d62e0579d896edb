"""Endpoints under /api/v1/experiments: list, CRUD, actions, history (API.md "Experiment Endpoints")."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from schemas.experiments import CloneInput, ExperimentDetail, ExperimentInput, ExperimentOut
from schemas.resources import (
    ExperimentCancelled,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentEvent,
    ExperimentPaused,
    ExperimentResumed,
    ExperimentStarted,
    ExperimentUpdated,
)
from service.api.run_views import experiment_runs
from service.core.errors import bad_parameter, validation_error
from service.http.auth import requires
from service.http.bodies import Field, check_fields, fields_of, parse_object, read_body, unwrap
from service.http.listing import SortedViews, paginate, time_key
from service.http.params import allowed, page_query, parse_datetime, parse_page, takes
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
)
from service.resources.commands import Envelope
from service.resources.fold import EXPERIMENT_STATUSES, Experiment, Resources, experiment_missing
from service.resources.run_silence import CONFIG_KEY as RUN_LIMIT_KEY
from service.resources.run_silence import config_problem

routes = web.RouteTableDef()

CREATE_FIELDS = fields_of(ExperimentInput)
UPDATE_FIELDS = fields_of(ExperimentInput, optional=True, nonblank=("name",))
CLONE_FIELDS = fields_of(CloneInput, nonblank=("name",))
FILTERS = {
    "status": "text",
    "name": "text",
    "created_after": "time",
    "created_before": "time",
    "tag": "text",
}
SORTS: dict[str, Callable[[Any], str]] = {
    "name": lambda e: e.name.casefold(),
    "created_at": lambda e: time_key(e.created_at),
    "updated_at": lambda e: time_key(e.updated_at),
    "status": lambda e: e.status,
}
ACTIONS: dict[str, type[ExperimentStarted | ExperimentPaused | ExperimentResumed | ExperimentCancelled]] = {
    "start": ExperimentStarted,
    "pause": ExperimentPaused,
    "resume": ExperimentResumed,
    "cancel": ExperimentCancelled,
}

LIST_QUERY = page_query(SORTS, "-created_at", FILTERS, {"status": EXPERIMENT_STATUSES})

_views: SortedViews[Experiment] = SortedViews(SORTS)


def new_experiment_id() -> str:
    return "exp_" + secrets.token_hex(6)


def experiment_out(experiment: Experiment) -> ExperimentOut:
    return msgspec.convert(experiment, ExperimentOut, from_attributes=True)


async def experiment_detail(request: web.Request, state: Resources, experiment_id: str) -> ExperimentDetail:
    """The experiment in `state` with its runs, results summary and progress (SQL over its runs' telemetry)."""
    experiment = state.experiments[experiment_id]
    detail = msgspec.convert(experiment, ExperimentDetail, from_attributes=True)
    runs = [state.runs[run_id] for run_id in experiment.run_ids if run_id in state.runs]
    detail.runs, detail.results_summary, detail.progress = await experiment_runs(request, experiment, runs)
    return detail


def checked_input(body: bytes, fields: dict[str, Field]) -> dict[str, Any]:
    """The fields of an experiment body, each of its type, and the config keys the service reads valid."""
    values = check_fields(unwrap(parse_object(body), "experiment"), fields, "an experiment")
    problem = config_problem(values.get("config", {}))
    if problem is not None:
        name = f"config.{RUN_LIMIT_KEY}"
        raise validation_error(f"{name} {problem}", {name: [problem]})
    return values


def experiment_in(state: Resources, experiment_id: str) -> Experiment:
    return found(state.experiments, experiment_id, experiment_missing(experiment_id).message)


@routes.get("/api/v1/experiments")
@requires("read")
@takes(LIST_QUERY)
async def list_experiments(request: web.Request) -> web.Response:
    query = request.query
    given = LIST_QUERY.check(query)
    sort = LIST_QUERY.sort(query)
    page = parse_page(query, sort)
    keep = _filter(given)
    state = state_of(request)
    filter_key = tuple(sorted(given.items()))
    rows = _views.rows(state, state.version(ExperimentEvent), state.experiments.values(), sort.field, keep, filter_key)
    result = paginate(rows, sort, page)
    return json_response({"data": [experiment_out(e) for e in result.items], "meta": result.meta})


def _filter(given: dict[str, str]) -> Callable[[Experiment], bool] | None:
    """One predicate for all the filters given; each is checked once, here."""
    checks: list[Callable[[Experiment], bool]] = []
    if "status" in given:
        status = given["status"]
        if status not in EXPERIMENT_STATUSES:
            raise bad_parameter(
                "filter[status]", f"unknown status {status!r}; use one of {allowed(EXPERIMENT_STATUSES)}"
            )
        checks.append(lambda e: e.status == status)
    if "name" in given:
        part = given["name"].casefold()
        checks.append(lambda e: part in e.name.casefold())
    if "created_after" in given:
        after = parse_datetime("filter[created_after]", given["created_after"])
        checks.append(lambda e: e.created_at > after)
    if "created_before" in given:
        before = parse_datetime("filter[created_before]", given["created_before"])
        checks.append(lambda e: e.created_at < before)
    if "tag" in given:
        tag = given["tag"]
        checks.append(lambda e: tag in e.tags)
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda e: all(check(e) for check in checks)


@routes.post("/api/v1/experiments")
@requires("write")
async def create_experiment(request: web.Request) -> web.Response:
    body = await read_body(request)
    values = checked_input(body, CREATE_FIELDS)
    experiment_id = new_experiment_id()
    done = await run_command(
        request, lambda env: ExperimentCreated(**env.fields(), experiment_id=experiment_id, **values), body
    )
    return done_response(done, await experiment_detail(request, done.state, done.resource_id), 201)


@routes.get("/api/v1/experiments/{id}")
@requires("read")
@takes(AS_OF_QUERY)
async def get_experiment(request: web.Request) -> web.Response:
    experiment_id = request.match_info["id"]
    state, _ = now_or_as_of(request, experiment_id, lambda state: state.experiments, "experiment")
    return json_response({"data": await experiment_detail(request, state, experiment_id)})


@routes.patch("/api/v1/experiments/{id}")
@requires("write")
async def update_experiment(request: web.Request) -> web.Response:
    experiment_id = request.match_info["id"]
    body = await read_body(request)
    values = checked_input(body, UPDATE_FIELDS)
    done = await run_command(
        request, lambda env: ExperimentUpdated(**env.fields(), experiment_id=experiment_id, **values), body
    )
    return done_response(done, await experiment_detail(request, done.state, experiment_id), 200)


@routes.delete("/api/v1/experiments/{id}")
@requires("write")
async def delete_experiment(request: web.Request) -> web.Response:
    experiment_id = request.match_info["id"]
    await run_command(request, lambda env: ExperimentDeleted(**env.fields(), experiment_id=experiment_id))
    return web.Response(status=204)


@routes.post("/api/v1/experiments/{id}/{action:start|pause|resume|cancel}")
@requires("write")
async def act_on_experiment(request: web.Request) -> web.Response:
    experiment_id = request.match_info["id"]
    event_type = ACTIONS[request.match_info["action"]]
    body = await read_body(request)
    check_fields(parse_object(body, allow_empty=True), {}, "an action")  # takes no fields
    done = await run_command(request, lambda env: event_type(**env.fields(), experiment_id=experiment_id), body)
    return done_response(done, await experiment_detail(request, done.state, experiment_id), 200)


@routes.post("/api/v1/experiments/{id}/clone")
@requires("write")
async def clone_experiment(request: web.Request) -> web.Response:
    source_id = request.match_info["id"]
    body = await read_body(request)
    raw = parse_object(body, allow_empty=True)
    values = check_fields(
        unwrap(raw, "experiment", optional=True) if "experiment" in raw else raw, CLONE_FIELDS, "a clone"
    )
    clone_id = new_experiment_id()

    def make_event(env: Envelope) -> ExperimentCreated:
        # Looked up here, not before: a retried clone replays even once its source is gone.
        source = experiment_in(state_of(request), source_id)
        return ExperimentCreated(
            **env.fields(),
            experiment_id=clone_id,
            name=values.get("name") or f"{source.name} (copy)"[:255],
            description=source.description,
            config=source.config,
            tags=source.tags,
            cloned_from=source.id,
        )

    done = await run_command(request, make_event, body)
    return done_response(done, await experiment_detail(request, done.state, done.resource_id), 201)


@routes.get("/api/v1/experiments/{id}/history")
@requires("read")
@takes(HISTORY_QUERY)
async def experiment_history(request: web.Request) -> web.Response:
    experiment_id = request.match_info["id"]
    return history_response(request, state_of(request).history(experiment_id), f"experiment {experiment_id}")
