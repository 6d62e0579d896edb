"""Export endpoints: telemetry as a file (streamed, or a background job when large),
export jobs, and an experiment as one document (API.md "Export Events", "Export Experiment").

Exports count in the `export` rate-limit class; looking at a job or downloading its
finished file are reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from aiohttp import web

from schemas.exports import (
    EXPERIMENT_PARTS,
    EventsExportInput,
    ExperimentExportInput,
    ExportFilters,
    ExportJob,
    ExportJobAccepted,
)
from schemas.resources import RequestRef
from service.api.experiments import experiment_detail, experiment_in, experiment_out
from service.api.export_files import send_file, send_stream
from service.api.run_views import run_detail
from service.api.telemetry import FILTERS, count_events, filter_values
from service.core.errors import ApiError, validation_error
from service.exports.experiment import ExperimentExport, events_export, json_document, zip_archive
from service.exports.formats import FORMATS, EventsExport, file_chunks
from service.exports.jobs import JobRecord
from service.exports.query import parse_fields
from service.http.appkeys import EXPORT_JOBS, SETTINGS, WAREHOUSE
from service.http.auth import principal_of, requires
from service.http.bodies import check_fields, fields_of, parse_object, read_body
from service.http.params import NO_QUERY, allowed, snapshot_now, takes
from service.http.responses import json_response, state_of, warehouse_query
from service.resources.commands import different_request, request_ref
from service.resources.fold import Experiment, Resources

routes = web.RouteTableDef()

EVENTS_EXPORT_FIELDS = fields_of(EventsExportInput)
EXPERIMENT_EXPORT_FIELDS = fields_of(ExperimentExportInput)
JOBS_PATH = "/api/v1/exports"
EXPERIMENT_CONTENT_TYPES = {"json": "application/json", "zip": "application/zip"}


class _Position(msgspec.Struct):
    partition: int
    next_offset: int


_decode_position = msgspec.json.Decoder(_Position).decode


@routes.post("/api/v1/telemetry/export")
@requires("read", limit="export")
async def export_events(request: web.Request) -> web.StreamResponse:
    """Telemetry events as a CSV, JSON lines or Parquet file; a job (202) when large or asked for.

    With an Idempotency-Key, a retry of a request that made a job answers that job again."""
    body = await read_body(request)
    raw = parse_object(body, allow_empty=True)
    _check_filter_names(raw.get("filters"))
    values = check_fields(raw, EVENTS_EXPORT_FIELDS, "an events export")
    owner = principal_of(request).key.id
    ref = request_ref(request, owner, body)
    if ref is None:
        planned = await _plan_export(request, values, owner, None)
    else:
        jobs = request.app[EXPORT_JOBS]
        # Only the choice (a job, or a stream) is made under the key's lock: a stream is
        # remembered nowhere, and a retry must not wait for another client's download.
        async with jobs.requests_in_flight.hold(ref.key):
            earlier = jobs.created_by(ref)
            if earlier is not None:
                if earlier.request != ref:
                    raise different_request()
                return _job_accepted(earlier, replayed=True)
            planned = await _plan_export(request, values, owner, ref)
    if isinstance(planned, JobRecord):
        return _job_accepted(planned, replayed=False)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    warehouse = request.app[WAREHOUSE]
    return await send_stream(
        request,
        lambda: file_chunks(warehouse, planned),
        f"crucible-events-{stamp}.{planned.format.extension}",
        planned.format.content_type,
    )


async def _plan_export(
    request: web.Request, values: dict[str, Any], owner: str, ref: RequestRef | None
) -> JobRecord | EventsExport:
    """The export asked for, counted: a job submitted when it is large or asked for, else the
    export to stream now."""
    file_format = FORMATS[values.get("format", "csv")]
    fields = parse_fields(values.get("fields"))
    filters = msgspec.structs.asdict(values.get("filters", ExportFilters()))
    parameters = filter_values(filters, "filters.{}")
    parameters["snapshot"] = snapshot_now()
    export = EventsExport(file_format, fields, parameters)
    total = await count_events(request, parameters)
    run_async = values.get("async")
    if run_async or (run_async is None and total > request.app[SETTINGS].export_async_rows):
        return request.app[EXPORT_JOBS].submit(owner, export, total, ref)
    return export


def _job_accepted(record: JobRecord, replayed: bool) -> web.Response:
    status_url = f"{JOBS_PATH}/{record.id}"
    accepted = ExportJobAccepted(
        job_id=record.id, status=record.status, status_url=status_url, download_url=f"{status_url}/download"
    )
    headers = {"Location": status_url}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response({"data": accepted}, 202, headers=headers)


def _check_filter_names(filters: Any) -> None:
    """Name the allowed filters when an unknown one is given (the types are checked with the body)."""
    if isinstance(filters, dict):
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            problems = [f"{name!r} is not a filter; filters are {allowed(FILTERS)}" for name in unknown]
            raise validation_error(f"filters {problems[0]}", {"filters": problems})


@routes.get("/api/v1/exports/{job_id}")
@requires("read")
@takes(NO_QUERY)
async def get_export_job(request: web.Request) -> web.Response:
    """An export job: its status, rows written so far and progress."""
    NO_QUERY.check(request.query)
    return json_response({"data": _job_out(request, _job_of(request))})


@routes.get("/api/v1/exports/{job_id}/download")
@requires("read")
@takes(NO_QUERY)
async def download_export(request: web.Request) -> web.StreamResponse:
    """The finished file of an export job; 409 while it is not finished."""
    NO_QUERY.check(request.query)
    record = _job_of(request)
    if record.status != "completed":
        detail = f": {record.error}" if record.error else "; try again once it is completed"
        raise ApiError(409, "conflict", f"export job {record.id} is {record.status}{detail}")
    path = request.app[EXPORT_JOBS].file_of(record)
    if not path.exists():
        raise ApiError(404, "not_found", f"the file of export job {record.id} was deleted")
    file_format = FORMATS[record.format]
    return send_file(path, f"crucible-events-{record.id}.{file_format.extension}", file_format.content_type)


def _job_of(request: web.Request) -> JobRecord:
    """The job named in the path, when the caller may see it (its owner, or an admin); else 404."""
    job_id = request.match_info["job_id"]
    record = request.app[EXPORT_JOBS].get(job_id)
    principal = principal_of(request)
    if record is None or (record.owner != principal.key.id and not principal.allows("admin")):
        raise ApiError(404, "not_found", f"export job {job_id} not found")
    return record


def _job_out(request: web.Request, record: JobRecord) -> ExportJob:
    progress = 1.0 if record.status == "completed" else min(record.rows_written / max(record.total_rows, 1), 1.0)
    return ExportJob(
        id=record.id,
        status=record.status,
        format=record.format,
        total_rows=record.total_rows,
        rows_written=record.rows_written,
        progress=round(progress, 4),
        bytes_written=record.bytes_written,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        expires_at=request.app[EXPORT_JOBS].expires_at(record),
        error=record.error,
        download_url=f"{JOBS_PATH}/{record.id}/download" if record.status == "completed" else None,
    )


@routes.post("/api/v1/experiments/{id}/export")
@requires("read", limit="export")
async def export_experiment(request: web.Request) -> web.StreamResponse:
    """An experiment as one JSON document or a zip of CSVs, with the log positions it reflects and its SHA-256."""
    experiment_id = request.match_info["id"]
    raw = parse_object(await read_body(request), allow_empty=True)
    values = check_fields(raw, EXPERIMENT_EXPORT_FIELDS, "an experiment export")
    state = state_of(request)
    experiment = experiment_in(state, experiment_id)
    include = tuple(sorted(set(values.get("include", EXPERIMENT_PARTS))))
    file_format = values.get("format", "json")
    parts: dict[str, Any] = {}
    if "config" in include:
        parts["config"] = msgspec.to_builtins(experiment.config)
    if "results" in include:
        detail = await experiment_detail(request, state, experiment_id)
        parts["results"] = msgspec.to_builtins(detail.results_summary)
    if "runs" in include:
        parts["runs"] = await experiment_runs(request, state, experiment)
    # The offset after the experiment's own last event: later events of other resources
    # do not change it, so the same experiment exports to the same bytes.
    positions: dict[str, Any] = {"resources": state.history(experiment_id)[-1].offset + 1}
    telemetry = None
    if "telemetry" in include:
        body = await warehouse_query(request, "telemetry_positions", {"experiment_id": experiment_id})
        held = [msgspec.to_builtins(_decode_position(line)) for line in body.splitlines() if line]
        positions["telemetry"] = held
        telemetry = events_export(experiment_id, held, csv=file_format == "zip")
    summary = msgspec.to_builtins(experiment_out(experiment))
    del summary["config"]  # a part of its own
    export = ExperimentExport(experiment_id, include, summary, parts, positions, telemetry)
    make = zip_archive if file_format == "zip" else json_document
    warehouse = request.app[WAREHOUSE]
    return await send_stream(
        request,
        lambda: make(warehouse, export),
        f"{experiment_id}.{file_format}",
        EXPERIMENT_CONTENT_TYPES[file_format],
    )


async def experiment_runs(request: web.Request, state: Resources, experiment: Experiment) -> list[dict[str, Any]]:
    """The experiment's runs as `GET /runs/:id` shows them (checkpoints included), in the order they started."""
    return [await run_detail(request, state.runs[run_id]) for run_id in experiment.run_ids if run_id in state.runs]
