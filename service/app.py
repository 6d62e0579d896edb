"""The aiohttp application: `create_app(settings)`, its resources as cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.api import (
    checkpoints,
    comparisons,
    experiments,
    exports,
    health,
    keys,
    models,
    runs,
    statistics,
    stream,
    telemetry,
    websocket,
)
from service.artifacts.store import make_store
from service.core.keyed_locks import KeyedLocks
from service.core.memory_trim import keep_releasing
from service.core.one_time_tokens import OneTimeTokens
from service.core.ratelimit import RateLimiter
from service.core.thread_priority import keep_merges_low
from service.exports.jobs import ExportJobs
from service.http import protocol
from service.http.appkeys import (
    ARTIFACTS,
    CHECKPOINT_LOCKS,
    EXPORT_JOBS,
    INGESTOR,
    LIVE_HUB,
    LOG,
    PROJECTOR,
    RATE_LIMITER,
    SESSION_SIGNER,
    SETTINGS,
    SIGN_IN_LINKS,
    WAREHOUSE,
    WRITER,
    WRITER_PROGRESS,
)
from service.http.auth import add_rate_limit_headers, auth_middleware, check_routes
from service.http.error_middleware import error_middleware
from service.ingest.ingestor import Ingestor
from service.ingest.workers import IngestWorkers
from service.live.hub import LiveHub
from service.log.interface import TELEMETRY_DLQ_TOPIC, TELEMETRY_TOPIC, EventLog
from service.log.kafka import KafkaLog
from service.log.sqlite import SqliteLog
from service.resources.credentials import SessionSigner, load_session_secret
from service.resources.keys import ADMIN_KEY_FILE, bootstrap_admin_key
from service.resources.projector import Projector
from service.resources.run_events import RunRouter
from service.resources.run_watch import RunWatch
from service.settings import Settings
from service.ui import pages
from service.ui.sign_in_link import local_sign_in_link
from service.warehouse.audit import AuditWriter
from service.warehouse.backpressure import Backpressure, WriterProgress, follow_group
from service.warehouse.client import Warehouse
from service.warehouse.migrations import migrate
from service.warehouse.writer import WarehouseWriter

logger = logging.getLogger(__name__)

# Room for headers and multipart framing beyond the largest accepted body.
BODY_SLACK_BYTES = 64 * 1024


def make_log(settings: Settings) -> EventLog:
    """The configured event log: Kafka when `--kafka` is set, else the embedded one."""
    if settings.kafka is not None:
        return KafkaLog(
            settings.kafka,
            telemetry_partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
            idempotence=settings.kafka_idempotence,
            request_timeout=settings.kafka_request_timeout,
            session_timeout=settings.kafka_session_timeout,
            idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        )
    return SqliteLog(
        settings.data_path,
        max_bytes=settings.log_max_bytes,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        retention_hours=settings.log_retention_hours,
        retained_topics=(TELEMETRY_TOPIC, TELEMETRY_DLQ_TOPIC),
    )


async def _log_context(app: web.Application) -> AsyncIterator[None]:
    log = app[LOG]
    await log.start()
    yield
    await log.stop()


async def _projector_context(app: web.Application) -> AsyncIterator[None]:
    projector = app[PROJECTOR]
    await projector.start()
    yield
    await projector.stop()


async def _run_watch_context(app: web.Application) -> AsyncIterator[None]:
    """Runs whose worker fell silent fail, and run again when heard: judged by one API process at a time."""
    settings = app[SETTINGS]
    watch = RunWatch(app[LOG], app[PROJECTOR], settings.run_stale_seconds, settings.run_stale_check_seconds)
    task = asyncio.create_task(watch.run(), name="run-watch")
    task.add_done_callback(_report_crash)
    yield
    await _cancel([task])


async def _live_context(app: web.Application) -> AsyncIterator[None]:
    """The live hub: WebSocket channels and telemetry streams of this process."""
    hub = app[LIVE_HUB]
    await hub.start()
    yield
    await hub.stop()


async def _close_live_connections(app: web.Application) -> None:
    """`on_shutdown`: live connections never end by themselves, and the server waits for every
    handler before it runs the cleanup contexts."""
    app[LIVE_HUB].end_all()


async def _admin_key_context(app: web.Application) -> AsyncIterator[None]:
    """First run of the embedded default: no key exists, so make an admin key and show it once."""
    settings = app[SETTINGS]
    secret = await bootstrap_admin_key(app[LOG], app[PROJECTOR], settings.data_path)
    if secret is not None:
        print(
            f"created an admin API key (shown once, also in {settings.data_path / ADMIN_KEY_FILE}, mode 0600):\n"
            f"  {secret}\n"
            f"use it as: curl -H 'Authorization: Bearer {secret}' ...",
            flush=True,
        )
    link = local_sign_in_link(settings, app[PROJECTOR].state, app[SIGN_IN_LINKS])
    if link is not None:
        print(f"open Crucible UI (this link signs you in once, within 10 minutes):\n  {link}", flush=True)
    yield


async def _warehouse_context(app: web.Application) -> AsyncIterator[None]:
    warehouse = app[WAREHOUSE]
    await warehouse.start()
    await migrate(warehouse)
    merges = []
    if warehouse.embedded:
        merges.append(asyncio.create_task(keep_merges_low(app[SETTINGS].merge_nice), name="merge-priority"))
    yield
    await _cancel(merges)
    await warehouse.stop()


async def _artifacts_context(app: web.Application) -> AsyncIterator[None]:
    store = app[ARTIFACTS]
    await store.start()
    yield
    await store.stop()


async def _export_jobs_context(app: web.Application) -> AsyncIterator[None]:
    """Export jobs of earlier runs, and the ones this process runs; stopped before the warehouse."""
    jobs = app[EXPORT_JOBS]
    await jobs.start()
    yield
    await jobs.stop()


async def _ingest_workers_context(app: web.Application) -> AsyncIterator[None]:
    workers = app[INGESTOR].workers
    await workers.start()
    yield
    await workers.stop()


async def _writer_context(app: web.Application) -> AsyncIterator[None]:
    """The warehouse writer, and the audit writer that copies resource events beside it."""
    writer = app[WRITER]
    tasks = []
    if writer is not None:
        tasks.append(asyncio.create_task(writer.run(), name="warehouse-writer"))
        audit = AuditWriter(app[LOG], app[WAREHOUSE])
        tasks.append(asyncio.create_task(audit.run(), name="audit-writer"))
    for task in tasks:
        task.add_done_callback(_report_crash)
    yield
    await _cancel(tasks)


async def _follow_writers_context(app: web.Application) -> AsyncIterator[None]:
    """Kafka: where the writers' group has committed, for ingest's backpressure."""
    progress, backpressure = app[WRITER_PROGRESS]
    task = asyncio.create_task(follow_group(app[LOG], progress, backpressure), name="follow-writers")
    task.add_done_callback(_report_crash)
    yield
    await _cancel([task])


async def _memory_trim_context(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(keep_releasing(app[SETTINGS].memory_trim_seconds), name="memory-trim")
    yield
    await _cancel([task])


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Stop background tasks of a cleanup context and wait until each has ended."""
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _gc_context(app: web.Application) -> AsyncIterator[None]:
    """Tune the cycle collector for a request loop that makes many short-lived objects.

    Every batch allocates thousands of objects that are freed by reference counting, yet
    they trigger generation-0 collections that scan everything start-up left behind
    (chDB, aiohttp, aiokafka): measured, a third of the event loop's time. Start-up
    objects are frozen out of collection and collections run less often.
    """
    gc.collect()
    gc.freeze()
    previous = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    yield
    gc.set_threshold(*previous)
    gc.unfreeze()


async def _no_sniffing(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: browsers must take every answer (errors, downloads, event
    streams) as the type it declares, never guess HTML or script from its bytes."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s stopped", task.get_name(), exc_info=task.exception())


def create_app(settings: Settings, api: bool = True) -> web.Application:
    """The service for one process: the API unless `api` is False (`crucible writer`),
    and the warehouse writer when `settings.writer` is set. Health and metrics always."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes + BODY_SLACK_BYTES,
        # Bodies are inflated by the routes that take them, bounded (service/core/input_bounds.py);
        # checkpoint uploads are stored as sent.
        handler_args={"auto_decompress": False},
    )
    protocol.install(app)  # the parser's own refusals in the error shape
    log = make_log(settings)
    warehouse = Warehouse(settings)
    app[SETTINGS] = settings
    app[LOG] = log
    app[WAREHOUSE] = warehouse
    projector = Projector(log, settings.idempotency_ttl_seconds)
    app[PROJECTOR] = projector
    workers = IngestWorkers(settings.ingest_workers if api else 0, settings.ingest_inline_bytes)
    progress = WriterProgress()
    backpressure = None
    # The embedded log's writer is this process's (or there is none: nothing to wait for);
    # Kafka's writers are other processes, followed through their group's commits.
    if api and (settings.writer or not settings.embedded_log):
        backpressure = Backpressure(
            progress, settings.ingest_max_writer_lag_events, settings.ingest_max_backpressure_seconds
        )
    router = RunRouter(lambda: projector.state.runs)
    app[INGESTOR] = Ingestor(log, settings.max_batch_events, router, workers, backpressure)
    if backpressure is not None and not settings.embedded_log:
        app[WRITER_PROGRESS] = (progress, backpressure)
    app[WRITER] = WarehouseWriter(log, warehouse, settings, progress) if settings.writer else None
    app[RATE_LIMITER] = RateLimiter()
    app[SIGN_IN_LINKS] = OneTimeTokens()
    app[SESSION_SIGNER] = SessionSigner(load_session_secret(settings.session_secret, settings.data_path))
    app.cleanup_ctx.extend([_log_context, _projector_context])
    if WRITER_PROGRESS in app:
        app.cleanup_ctx.append(_follow_writers_context)
    app.cleanup_ctx.append(_ingest_workers_context)
    if api:
        app.cleanup_ctx.append(_run_watch_context)
        app[LIVE_HUB] = LiveHub(log, app[PROJECTOR], settings)
        app.cleanup_ctx.append(_live_context)
        app.on_shutdown.append(_close_live_connections)
    if api and settings.embedded_log:
        app.cleanup_ctx.append(_admin_key_context)
    app.cleanup_ctx.extend([_warehouse_context, _writer_context])
    if api:
        app[EXPORT_JOBS] = ExportJobs(warehouse, settings)
        # Checkpoint uploads stream their body from request.content, which client_max_size
        # does not limit; their own limit is checkpoint_max_bytes.
        app[ARTIFACTS] = make_store(settings)
        app[CHECKPOINT_LOCKS] = KeyedLocks()
        app.cleanup_ctx.append(_artifacts_context)
        app.cleanup_ctx.append(_export_jobs_context)  # stopped before the warehouse, which jobs read
        for module in (
            telemetry,
            stream,
            experiments,
            runs,
            checkpoints,
            models,
            keys,
            statistics,
            comparisons,
            exports,
            websocket,
            pages,
        ):
            app.add_routes(module.routes)
    app.cleanup_ctx.extend([_gc_context, _memory_trim_context])
    app.add_routes(health.routes)
    app.add_routes([health.metrics_route(settings.metrics_public)])
    app.on_response_prepare.extend([add_rate_limit_headers, _no_sniffing])
    check_routes(app)
    return app
