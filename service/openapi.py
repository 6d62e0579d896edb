"""The OpenAPI 3.1 document of the API, built from the router and the msgspec schemas.

Paths, methods, path parameters and security come from the routes themselves;
bodies and answers from `OPERATIONS`, which names the msgspec types of each
handler. msgspec writes the JSON Schemas (2020-12, the dialect of OpenAPI 3.1).
A route missing from `OPERATIONS` fails the document, and a test builds it.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from schemas.checkpoints import CheckpointFile
from schemas.common import ErrorResponse, PageMeta
from schemas.experiments import CloneInput, ExperimentBody, ExperimentDetail, ExperimentOut, HistoryEntry
from schemas.exports import EventsExportInput, ExperimentExportInput, ExportJob, ExportJobAccepted
from schemas.keys import ApiKeyBody, ApiKeyOut, SessionInput, SessionOut
from schemas.models import ModelBody, ModelOut, ModelStatistics
from schemas.runs import CheckpointOut, LogLine, MetricHistory, RunDetail, RunOut
from schemas.statistics import ComparisonInput, ComparisonReport, StatisticalResultOut, StatisticalTestBody
from schemas.telemetry import AggregatePoint, IngestBatch, IngestResult, StoredEvent
from service.auth import access_of
from service.checkpoints_api import SHA256_HEADER

VERSION = "1.0.0"
BINARY = "application/octet-stream"
EVENTS_MEDIA_TYPES = ("text/csv", "application/x-ndjson", "application/vnd.apache.parquet")
_REF = "#/components/schemas/{name}"
_PATH_PARAMETER = re.compile(r"\{(\w+)(?::[^}]*)?\}")


@dataclass(frozen=True, slots=True)
class Operation:
    """What a handler takes and gives: its body type, and the type of `data` in its answer."""

    body: Any = None
    data: Any = None
    status: int = 200
    listing: bool = False  # `data` is a list, with `meta` (PageMeta)
    raw_body: str | None = None  # the media type of a body that is raw bytes, not JSON
    raw_answer: str | None = None  # the media type of an answer that is raw bytes, not JSON
    also: tuple[int, ...] = ()  # other success statuses, with the same answer (304: none, by HTTP's rules)
    headers: tuple[str, ...] = ()  # optional request headers it reads
    files: tuple[str, ...] = ()  # media types of a file the answer is (a download), instead of JSON
    accepted: Any = None  # the `data` of a 202 answer, when the call may become a background job


OPERATIONS: dict[str, Operation] = {
    "ingest_events": Operation(IngestBatch, IngestResult, 202),
    "list_events": Operation(data=StoredEvent, listing=True),
    "aggregate": Operation(data=list[AggregatePoint]),
    "list_experiments": Operation(data=ExperimentOut, listing=True),
    "create_experiment": Operation(ExperimentBody, ExperimentDetail, 201),
    "get_experiment": Operation(data=ExperimentDetail),
    "update_experiment": Operation(ExperimentBody, ExperimentDetail),
    "delete_experiment": Operation(status=204),
    "act_on_experiment": Operation(data=ExperimentDetail),
    "clone_experiment": Operation(CloneInput, ExperimentDetail, 201),
    "experiment_history": Operation(data=HistoryEntry, listing=True),
    "list_runs": Operation(data=RunOut, listing=True),
    "list_experiment_runs": Operation(data=RunOut, listing=True),
    "get_run": Operation(data=RunDetail),
    "list_checkpoints": Operation(data=list[CheckpointOut]),
    "metric_history": Operation(data=MetricHistory),
    "run_logs": Operation(data=list[LogLine]),
    "list_models": Operation(data=ModelOut, listing=True),
    "create_model": Operation(ModelBody, ModelOut, 201),
    "get_model": Operation(data=ModelOut),
    "update_model": Operation(ModelBody, ModelOut),
    "delete_model": Operation(status=204),
    "model_history": Operation(data=HistoryEntry, listing=True),
    "model_statistics": Operation(data=ModelStatistics),
    "create_api_key": Operation(ApiKeyBody, ApiKeyOut, 201),
    "list_api_keys": Operation(data=ApiKeyOut, listing=True),
    "get_api_key": Operation(data=ApiKeyOut),
    "revoke_api_key": Operation(status=204),
    "create_session": Operation(SessionInput, SessionOut, 201),
    "end_session": Operation(status=204),
    "create_statistical_result": Operation(StatisticalTestBody, StatisticalResultOut, 201),
    "list_statistical_results": Operation(data=StatisticalResultOut, listing=True),
    "list_experiment_statistical_results": Operation(data=StatisticalResultOut, listing=True),
    "get_statistical_result": Operation(data=StatisticalResultOut),
    "export_comparison": Operation(ComparisonInput, ComparisonReport),
    "stream_events": Operation(),
    "live_socket": Operation(status=101),
    "export_events": Operation(EventsExportInput, files=EVENTS_MEDIA_TYPES, accepted=ExportJobAccepted),
    "get_export_job": Operation(data=ExportJob),
    "download_export": Operation(files=EVENTS_MEDIA_TYPES),
    "export_experiment": Operation(ExperimentExportInput, files=("application/json", "application/zip")),
    "openapi_document": Operation(data=dict[str, Any]),
    "healthz": Operation(data=dict[str, Any]),
    "readyz": Operation(data=dict[str, Any]),
    "upload_checkpoint": Operation(
        data=CheckpointFile, status=201, raw_body=BINARY, also=(200,), headers=(SHA256_HEADER,)
    ),
    "download_checkpoint": Operation(
        raw_answer=BINARY, also=(206, 304), headers=("Range", "If-Range", "If-None-Match")
    ),
    "prometheus_metrics": Operation(),
    "_protected_metrics": Operation(),
}


@functools.cache
def _envelope(data: Any, listing: bool) -> Any:
    """The answer's type: `{"data": ...}`, with `meta` for lists (one class per data type)."""
    if listing:
        fields = [("data", types.GenericAlias(list, (data,))), ("meta", PageMeta)]
        return msgspec.defstruct(f"{_name(data)}Page", fields, kw_only=True)
    return msgspec.defstruct(f"{_name(data)}Answer", [("data", data)], kw_only=True)


def _name(kind: Any) -> str:
    """A component name for a type: `AggregatePointList`, `Object` for free-form dicts."""
    origin = typing.get_origin(kind)
    if origin is list:
        return _name(typing.get_args(kind)[0]) + "List"
    if origin is dict or kind is Any:
        return "Object"
    return str(kind.__name__)


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of `app`'s routes; KeyError names a route without an entry."""
    routes = [r for r in app.router.routes() if r.method != "HEAD"]
    operations = {r: OPERATIONS[r.handler.__name__] for r in routes}  # type: ignore[union-attr]
    kinds: list[Any] = [ErrorResponse]
    bodies: dict[web.AbstractRoute, int] = {}
    answers: dict[web.AbstractRoute, int] = {}
    jobs: dict[web.AbstractRoute, int] = {}
    for route, operation in operations.items():
        if operation.body is not None:
            bodies[route] = len(kinds)
            kinds.append(operation.body)
        if operation.data is not None:
            answers[route] = len(kinds)
            kinds.append(_envelope(operation.data, operation.listing))
        if operation.accepted is not None:
            jobs[route] = len(kinds)
            kinds.append(_envelope(operation.accepted, False))
    schemas, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for route, operation in operations.items():
        canonical = route.resource.canonical if route.resource is not None else ""
        path = _PATH_PARAMETER.sub(r"{\1}", canonical)
        access = access_of(route.handler)
        entry: dict[str, Any] = {
            "operationId": route.handler.__name__.strip("_"),
            "summary": _summary(route.handler),
            "tags": [path.split("/")[3] if path.startswith("/api/v1/") else "operations"],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _PATH_PARAMETER.findall(canonical)
            ],
            "responses": _responses(
                operation,
                schemas[answers[route]] if route in answers else None,
                schemas[jobs[route]] if route in jobs else None,
            ),
        }
        if access is not None and access.scope is not None:
            entry["security"] = [{"bearer": []}, {"session": []}]
            entry["description"] = f"Needs the {access.scope!r} scope."
        else:
            entry["security"] = []
        headers = (*operation.headers, "Idempotency-Key") if route.method in ("POST", "PUT") else operation.headers
        entry["parameters"] += [
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"}} for name in headers
        ]
        if route in bodies:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schemas[bodies[route]]}},
            }
        elif operation.raw_body is not None:
            entry["requestBody"] = {"required": True, "content": {operation.raw_body: {}}}
        paths.setdefault(path, {})[route.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "Crucible telemetry service", "version": VERSION},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
                "session": {"type": "apiKey", "in": "cookie", "name": "_crucible_ui_key"},
            },
        },
    }


def _summary(handler: Any) -> str:
    """The first line of the handler's docstring, else its name in words."""
    if handler.__doc__:
        return str(handler.__doc__).strip().splitlines()[0]
    return str(handler.__name__).strip("_").replace("_", " ").capitalize()


def _responses(
    operation: Operation, answer_schema: dict[str, Any] | None, job_schema: dict[str, Any] | None
) -> dict[str, Any]:
    error = {
        "description": "an error",
        "content": {"application/json": {"schema": {"$ref": _REF.format(name="ErrorResponse")}}},
    }
    success: dict[str, Any] = {"description": "success"}
    if answer_schema is not None:
        success["content"] = {"application/json": {"schema": answer_schema}}
    elif operation.raw_answer is not None:
        success["content"] = {operation.raw_answer: {}}  # OpenAPI 3.1: raw bytes need no schema
    if operation.files:
        success["description"] = "the file, as a download"
        success["content"] = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in operation.files}
    answers = {str(operation.status): success}
    for status in operation.also:
        answers[str(status)] = {"description": "not modified"} if status == 304 else success
    if job_schema is not None:
        answers["202"] = {
            "description": "too large to stream (or asked for): a background job",
            "content": {"application/json": {"schema": job_schema}},
        }
    return {**answers, "default": error}
