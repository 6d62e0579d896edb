"""The OpenAPI 3.1 document of the API, built from the router and the msgspec schemas.

Paths, methods, path parameters and security come from the routes themselves;
query parameters from the `Query` each handler declares with `takes` and checks its
requests against (service/http/params.py), so the two cannot drift; bodies and answers
from `OPERATIONS`, which names the msgspec types of each handler. msgspec writes the
JSON Schemas (2020-12, the dialect of OpenAPI 3.1). Every error status an operation
can answer is listed with the error shape, so a client (or a fuzzer) can tell an
answer the document does not promise. A route missing from `OPERATIONS` fails the
document, and a test builds it.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from schemas.checkpoints import CheckpointFile
from schemas.common import ErrorResponse, PageMeta
from schemas.experiments import CloneInput, ExperimentBody, ExperimentDetail, ExperimentOut, HistoryEntry
from schemas.exports import (
    EventsExportInput,
    ExperimentExportDocument,
    ExperimentExportInput,
    ExportJob,
    ExportJobAccepted,
)
from schemas.keys import ApiKeyBody, ApiKeyOut, SessionInput, SessionOut
from schemas.models import ModelBody, ModelOut, ModelStatistics
from schemas.runs import CheckpointOut, LogLine, MetricHistory, RunDetail, RunOut
from schemas.statistics import ComparisonInput, ComparisonReport, StatisticalResultOut, StatisticalTestBody
from schemas.telemetry import AggregatePoint, IngestBatch, IngestResult, StoredEvent
from service.api.checkpoints import SHA256_HEADER
from service.http.auth import access_of, is_page
from service.http.params import DATETIME, Query, query_of

VERSION = "1.0.0"
BINARY = "application/octet-stream"
EVENTS_MEDIA_TYPES = ("text/csv", "application/x-ndjson", "application/vnd.apache.parquet")
_REF = "#/components/schemas/{name}"
_PATH_PARAMETER = re.compile(r"\{(\w+)(?::([^}]*))?\}")  # a route's {name} or {name:regex}
_WORDS = re.compile(r"\w+(\|\w+)*")


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
    json_file: Any = None  # the type of a download in `files` that is application/json (a document, not bytes)
    document: dict[str, Any] | None = None  # the JSON Schema of an answer that is not in the `data` envelope
    errors: tuple[int, ...] = ()  # error statuses beyond those every operation of its kind can answer
    alternative: Any = None  # the `data` of another answer (no `meta`) the same status may carry instead


# Bodies checked field by field (service/http/bodies.py: check_fields, unwrap) refuse a field they
# do not name with a 422, so their schemas are closed. Structs nested in them that msgspec
# converts (rate limits, export filters) ignore unknown fields and stay open, and so does a
# clone's body, which may also come wrapped in "experiment".
CLOSED_BODIES = frozenset(
    {
        "ExperimentBody",
        "ExperimentInput",
        "ModelBody",
        "ModelInput",
        "ApiKeyBody",
        "ApiKeyInput",
        "SessionInput",
        "StatisticalTestBody",
        "StatisticalTestInput",
        "StatisticalOptions",
        "ComparisonInput",
        "EventsExportInput",
        "ExperimentExportInput",
    }
)

OPERATIONS: dict[str, Operation] = {
    "ingest_events": Operation(IngestBatch, IngestResult, 202),
    # With `agg`, the same GET answers aggregate points instead of a page of events.
    "list_events": Operation(data=StoredEvent, listing=True, alternative=list[AggregatePoint]),
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
    "create_session": Operation(SessionInput, SessionOut, 201, errors=(401,)),  # public; checks the key it is sent
    "get_session": Operation(data=SessionOut | None, errors=(401, 422)),  # public; null without a session
    "end_session": Operation(status=204),
    "create_statistical_result": Operation(StatisticalTestBody, StatisticalResultOut, 201, errors=(404,)),
    "list_statistical_results": Operation(data=StatisticalResultOut, listing=True),
    "list_experiment_statistical_results": Operation(data=StatisticalResultOut, listing=True),
    "get_statistical_result": Operation(data=StatisticalResultOut),
    "export_comparison": Operation(ComparisonInput, ComparisonReport, errors=(404,)),  # an unknown experiment
    "stream_events": Operation(raw_answer="text/event-stream"),
    "live_socket": Operation(status=101),
    "export_events": Operation(EventsExportInput, files=EVENTS_MEDIA_TYPES, accepted=ExportJobAccepted),
    "get_export_job": Operation(data=ExportJob),
    "download_export": Operation(files=EVENTS_MEDIA_TYPES, errors=(409,)),
    "export_experiment": Operation(
        ExperimentExportInput, files=("application/json", "application/zip"), json_file=ExperimentExportDocument
    ),
    "openapi_document": Operation(document={"type": "object", "required": ["openapi", "info", "paths"]}),
    "healthz": Operation(data=dict[str, Any]),
    "readyz": Operation(data=dict[str, Any], also=(503,)),  # 503: not ready, with the same checks
    "upload_checkpoint": Operation(
        data=CheckpointFile, status=201, raw_body=BINARY, also=(200,), headers=(SHA256_HEADER,)
    ),
    "download_checkpoint": Operation(
        raw_answer=BINARY, also=(206, 304), headers=("Range", "If-Range", "If-None-Match"), errors=(416, 422)
    ),
    "prometheus_metrics": Operation(raw_answer="text/plain"),
    "_protected_metrics": Operation(raw_answer="text/plain"),
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
    if origin in (types.UnionType, typing.Union):  # `X | None`: `XOrNull`
        return "Or".join("Null" if arg is type(None) else _name(arg) for arg in typing.get_args(kind))
    return str(kind.__name__)


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of `app`'s routes; KeyError names a route without an entry."""
    routes = [r for r in app.router.routes() if r.method != "HEAD" and not is_page(r.handler)]
    operations = {r: OPERATIONS[r.handler.__name__] for r in routes}  # type: ignore[union-attr]
    kinds: list[Any] = [ErrorResponse]
    bodies: dict[web.AbstractRoute, int] = {}
    answers: dict[web.AbstractRoute, int] = {}
    jobs: dict[web.AbstractRoute, int] = {}
    files: dict[web.AbstractRoute, int] = {}
    alternatives: dict[web.AbstractRoute, int] = {}
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
        if operation.alternative is not None:
            alternatives[route] = len(kinds)
            kinds.append(_envelope(operation.alternative, False))
        if operation.json_file is not None:
            files[route] = len(kinds)
            kinds.append(operation.json_file)
    schemas, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    for name in CLOSED_BODIES:
        components[name]["additionalProperties"] = False  # KeyError: a body no longer in the document
    paths: dict[str, dict[str, Any]] = {}
    for route, operation in operations.items():
        canonical = route.resource.canonical if route.resource is not None else ""
        path = _PATH_PARAMETER.sub(r"{\1}", canonical)
        access = access_of(route.handler)
        secured = access is not None and access.scope is not None
        path_parameters = _PATH_PARAMETER.findall(canonical)  # (name, regex) pairs
        takes_body = operation.body is not None or operation.raw_body is not None
        query = query_of(route.handler)
        entry: dict[str, Any] = {
            "operationId": route.handler.__name__.strip("_"),
            "summary": _summary(route.handler),
            "tags": [path.split("/")[3] if path.startswith("/api/v1/") else "operations"],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": _path_schema(regex)}
                for name, regex in path_parameters
            ]
            + (_query_parameters(query) if query is not None else []),
            "responses": _responses(
                operation,
                _answer_schema(schemas, answers.get(route), alternatives.get(route), operation.document),
                schemas[jobs[route]] if route in jobs else None,
                schemas[files[route]] if route in files else None,
                _error_statuses(operation, route.method, secured, bool(path_parameters), takes_body, query),
            ),
        }
        if secured and access is not None:
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
    _link_created_resources(paths)
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


# Operations that create a resource, the status and JSON pointer of its id in their answer,
# and the path under which the operations on that resource live (with its id parameter).
CREATIONS = (
    ("/api/v1/experiments", "201", "/data/id", "/api/v1/experiments/{id}"),
    ("/api/v1/models", "201", "/data/id", "/api/v1/models/{id}"),
    ("/api/v1/api-keys", "201", "/data/id", "/api/v1/api-keys/{id}"),
    ("/api/v1/statistical-results", "201", "/data/id", "/api/v1/statistical-results/{id}"),
    ("/api/v1/telemetry/export", "202", "/data/job_id", "/api/v1/exports/{job_id}"),
)


def _link_created_resources(paths: dict[str, dict[str, Any]]) -> None:
    """OpenAPI links from each creation to the operations on what it created, so a client
    generator (or a stateful fuzzer) knows where the id of a new resource goes."""
    for collection, status, pointer, item in CREATIONS:
        answer = paths.get(collection, {}).get("post", {}).get("responses", {}).get(status)
        if answer is None:
            continue
        parameter = _PATH_PARAMETER.findall(item)[-1][0]
        links: dict[str, Any] = {}
        for path, methods in paths.items():
            if path != item and not path.startswith(item + "/"):
                continue
            for method, operation in methods.items():
                links[f"{method}_{operation['operationId']}"] = {
                    "operationId": operation["operationId"],
                    "parameters": {f"path.{parameter}": f"$response.body#{pointer}"},
                }
        if links:
            answer["links"] = links


def _path_schema(regex: str) -> dict[str, Any]:
    """A path parameter's schema: a route's `{name:a|b}` is an enum, another regex a pattern.

    Without it a fuzzer sends `{action}` = "clone" to the start/pause/resume/cancel route, and
    the router answers from another one."""
    if not regex:
        return {"type": "string"}
    if _WORDS.fullmatch(regex):
        return {"type": "string", "enum": regex.split("|")}
    return {"type": "string", "pattern": f"^(?:{regex})$"}


def _answer_schema(
    schemas: Sequence[dict[str, Any]], answer: int | None, alternative: int | None, document: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The schema of a success answer: its envelope, or either of two, or a plain JSON document."""
    if answer is None:
        return document
    if alternative is None:
        return schemas[answer]
    return {"anyOf": [schemas[answer], schemas[alternative]]}


def _summary(handler: Any) -> str:
    """The first line of the handler's docstring, else its name in words."""
    if handler.__doc__:
        return str(handler.__doc__).strip().splitlines()[0]
    return str(handler.__name__).strip("_").replace("_", " ").capitalize()


# Why each error status can be answered, whatever the operation (see `_error_statuses`).
ERROR_DESCRIPTIONS = {
    400: "malformed request: JSON that does not parse, a header or URL that cannot be read",
    401: "no credential, or one that is not valid",
    403: "the key lacks the scope this operation needs",
    404: "no such resource",
    409: "the resource's state does not allow it (or another writer got there first)",
    413: "the body is larger than the server accepts",
    415: "the body is not of a media type this operation takes",
    416: "the Range asked for is not in the file",
    422: "a parameter or a field of the body is not valid; details name each",
    429: "the key's rate limit for this class of endpoint is spent; see Retry-After",
    503: "the log or the warehouse did not answer; retry after Retry-After",
}


def _error_statuses(
    operation: Operation, method: str, secured: bool, has_path_parameters: bool, takes_body: bool, query: Query | None
) -> list[int]:
    """The error statuses an operation can answer, from what it takes."""
    statuses = {400, 503, *operation.errors}
    if secured:
        statuses |= {401, 403, 429}
    if has_path_parameters:
        statuses.add(404)
    if takes_body or method in ("POST", "PUT", "PATCH", "DELETE"):
        # Commands: a body (or none) that is not valid, one too large, and the fold refusing it.
        statuses |= {409, 413, 415, 422}
    if query is not None:
        statuses.add(422)  # a parameter out of range, or one it does not take (refused, not ignored)
    return sorted(statuses)


def _query_parameters(query: Query) -> list[dict[str, Any]]:
    """The query parameters of `query`; its filters are one `filter` object in the deepObject
    style, which is how `filter[field]=value` is written."""
    parameters: list[dict[str, Any]] = []
    for parameter in query.parameters:
        declared: dict[str, Any] = {"name": parameter.name, "in": "query", "required": parameter.required}
        if parameter.description:
            declared["description"] = parameter.description
        declared["schema"] = dict(parameter.schema)
        parameters.append(declared)
    if query.filters:
        properties: dict[str, Any] = {}
        for name, kind in query.filters.items():
            schema: dict[str, Any] = dict(DATETIME) if kind == "time" else {"type": "string"}
            if name in query.choices:
                schema["enum"] = list(query.choices[name])
            properties[name] = schema
        parameters.append(
            {
                "name": "filter",
                "in": "query",
                "required": False,
                "description": "filter[field]=value; times are ISO 8601",
                "style": "deepObject",
                "explode": True,
                "schema": {"type": "object", "properties": properties, "additionalProperties": False},
            }
        )
    return parameters


def _responses(
    operation: Operation,
    answer_schema: dict[str, Any] | None,
    job_schema: dict[str, Any] | None,
    json_file_schema: dict[str, Any] | None,
    error_statuses: list[int],
) -> dict[str, Any]:
    error_content = {"application/json": {"schema": {"$ref": _REF.format(name="ErrorResponse")}}}
    success: dict[str, Any] = {"description": "success"}
    if answer_schema is not None:
        success["content"] = {"application/json": {"schema": answer_schema}}
    elif operation.raw_answer is not None:
        success["content"] = {operation.raw_answer: {}}  # OpenAPI 3.1: raw bytes need no schema
    if operation.files:
        success["description"] = "the file, as a download"
        success["content"] = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in operation.files}
        if json_file_schema is not None:
            success["content"]["application/json"] = {"schema": json_file_schema}
    answers: dict[str, Any] = {
        str(status): {"description": ERROR_DESCRIPTIONS[status], "content": error_content} for status in error_statuses
    }
    answers[str(operation.status)] = success
    for status in operation.also:
        answers[str(status)] = {"description": "not modified"} if status == 304 else success
    if job_schema is not None:
        answers["202"] = {
            "description": "too large to stream (or asked for): a background job",
            "content": {"application/json": {"schema": job_schema}},
        }
    return dict(sorted(answers.items()))
