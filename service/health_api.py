"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from service.appkeys import LOG, WAREHOUSE, WRITER
from service.telemetry_api import json_response

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process answers."""
    return json_response({"data": {"status": "ok"}})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """The log and the warehouse answer, and the writer (if this process runs one) is inserting."""
    log_ok, warehouse_ok = await asyncio.gather(request.app[LOG].ping(), request.app[WAREHOUSE].ping())
    writer = request.app[WRITER]
    checks = {
        "log": log_ok,
        "warehouse": warehouse_ok,
        "writer": writer.healthy and writer.running if writer is not None else None,
    }
    ready = log_ok and warehouse_ok and checks["writer"] is not False
    return json_response(
        {"data": {"status": "ready" if ready else "not_ready", "checks": checks}}, status=200 if ready else 503
    )


@routes.get("/metrics")
async def prometheus_metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(generate_latest, REGISTRY)
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
