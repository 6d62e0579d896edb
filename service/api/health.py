"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from service.api.openapi import build_document
from service.core.errors import bad_parameter
from service.http.appkeys import LOG, PROJECTOR, WAREHOUSE, WRITER
from service.http.auth import public, requires
from service.http.params import Parameter, Query, one_of, takes
from service.http.responses import json_response
from service.warehouse.pipeline import pipeline_status

routes = web.RouteTableDef()


@routes.get("/healthz")
@public
async def healthz(request: web.Request) -> web.Response:
    """The process answers."""
    return json_response({"data": {"status": "ok"}})


READY_QUERY = Query(
    (Parameter("detail", one_of(["true", "false"], "false"), "also where the data is, per log partition"),)
)


@routes.get("/readyz")
@public
@takes(READY_QUERY)
async def readyz(request: web.Request) -> web.Response:
    """The log and the warehouse answer, the projector has replayed the resources log,
    and the writer (if this process runs one) has joined its group and is inserting.
    With `?detail=true`, also where the data is (`service/warehouse/pipeline.py`)."""
    READY_QUERY.check(request.query)
    detail = request.query.get("detail", "false")
    if detail not in ("true", "false"):
        raise bad_parameter("detail", "must be true or false")
    log_ok, warehouse_ok = await asyncio.gather(request.app[LOG].ping(), request.app[WAREHOUSE].ping())
    writer = request.app[WRITER]
    checks = {
        "log": log_ok,
        "warehouse": warehouse_ok,
        "projector": request.app[PROJECTOR].caught_up,
        "writer": writer.healthy and writer.running and writer.joined if writer is not None else None,
    }
    ready = log_ok and warehouse_ok and checks["projector"] and checks["writer"] is not False
    data: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks}
    if detail == "true":
        data["pipeline"] = msgspec.to_builtins(await pipeline_status(request.app[LOG], request.app[WAREHOUSE]))
    return json_response({"data": data}, status=200 if ready else 503)


async def prometheus_metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(generate_latest, REGISTRY)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def metrics_route(open_to_anyone: bool) -> web.RouteDef:
    """GET /metrics, open to scrapers by default, else behind the read scope."""
    handler = public(prometheus_metrics) if open_to_anyone else requires("read")(_protected_metrics)
    return web.get("/metrics", handler)


async def _protected_metrics(request: web.Request) -> web.Response:
    return await prometheus_metrics(request)


@routes.get("/api/v1/openapi.json")
@requires("read")
async def openapi_document(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return json_response(build_document(request.app))
