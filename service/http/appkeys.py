"""Every `web.AppKey` of the application, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from service.settings import Settings

if TYPE_CHECKING:
    from service.artifacts.store import ArtifactStore
    from service.core.keyed_locks import KeyedLocks
    from service.core.one_time_tokens import OneTimeTokens
    from service.core.ratelimit import RateLimiter
    from service.exports.jobs import ExportJobs
    from service.ingest.ingestor import Ingestor
    from service.live.hub import LiveHub
    from service.log.interface import EventLog
    from service.resources.credentials import SessionSigner
    from service.resources.projector import Projector
    from service.warehouse.backpressure import Backpressure, WriterProgress
    from service.warehouse.client import Warehouse
    from service.warehouse.writer import WarehouseWriter

SETTINGS = web.AppKey("settings", Settings)
LOG: web.AppKey[EventLog] = web.AppKey("log")
WAREHOUSE: web.AppKey[Warehouse] = web.AppKey("warehouse")
INGESTOR: web.AppKey[Ingestor] = web.AppKey("ingestor")
WRITER: web.AppKey[WarehouseWriter | None] = web.AppKey("writer")
PROJECTOR: web.AppKey[Projector] = web.AppKey("projector")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
SESSION_SIGNER: web.AppKey[SessionSigner] = web.AppKey("session_signer")
ARTIFACTS: web.AppKey[ArtifactStore] = web.AppKey("artifacts")
CHECKPOINT_LOCKS: web.AppKey[KeyedLocks] = web.AppKey("checkpoint_locks")
LIVE_HUB: web.AppKey[LiveHub] = web.AppKey("live_hub")
EXPORT_JOBS: web.AppKey[ExportJobs] = web.AppKey("export_jobs")
WRITER_PROGRESS: web.AppKey[tuple[WriterProgress, Backpressure]] = web.AppKey("writer_progress")
# One-time sign-in links (token → API key id), made by this process.
SIGN_IN_LINKS: web.AppKey[OneTimeTokens[str]] = web.AppKey("sign_in_links")
