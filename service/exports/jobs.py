"""Export jobs: large telemetry exports written to a file under the data dir in the background.

Jobs live in this process's memory, each with a small JSON sidecar beside its file
(`<data dir>/exports/<job id>.job.json`) so that a restart still shows finished jobs;
a job that a restart (or a stop) interrupted is reported failed. At most
`--export-jobs` run at once, the rest wait queued. Finished jobs and their files are
deleted `--export-retention-hours` after they finished. Jobs belong to the process
that ran them: behind several API replicas, a job is found on the one that took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import threading
from pathlib import Path

import msgspec

from schemas.exports import EventsFormat, JobStatus
from schemas.resources import RequestRef
from service.core.keyed_locks import KeyedLocks
from service.exports.formats import EventsExport, file_chunks
from service.settings import Settings
from service.warehouse.client import Warehouse

logger = logging.getLogger(__name__)

JOBS_DIRECTORY = "exports"
SIDECAR_SUFFIX = ".job.json"
SWEEP_SECONDS = 600.0
UNFINISHED: frozenset[JobStatus] = frozenset({"queued", "running"})
STOPPED = "the service stopped before the export finished"


class JobRecord(msgspec.Struct, kw_only=True):
    """A job as its sidecar keeps it; counts move while it runs (from its writing thread)."""

    id: str
    owner: str  # the API key that asked for it
    status: JobStatus
    format: EventsFormat
    extension: str
    total_rows: int
    created_at: dt.datetime
    rows_written: int = 0
    bytes_written: int = 0
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: str | None = None
    request: RequestRef | None = None  # the Idempotency-Key that created it, scoped to its owner


class JobInterrupted(Exception):
    """The service stopped while the job ran."""


_encode_record = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(JobRecord).decode


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ExportJobs:
    def __init__(self, warehouse: Warehouse, settings: Settings) -> None:
        self._warehouse = warehouse
        self.directory = settings.data_path / JOBS_DIRECTORY
        hours = settings.export_retention_hours
        self.retention = dt.timedelta(hours=hours) if hours > 0 else None
        self._slots = asyncio.Semaphore(settings.export_jobs)
        self._jobs: dict[str, JobRecord] = {}
        self._by_request: dict[str, JobRecord] = {}  # Idempotency-Key → the job it created
        # A keyed request checks for its job, counts rows, then submits: one copy at a time.
        self.requests_in_flight = KeyedLocks()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = threading.Event()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read the sidecars of earlier runs, then delete expired jobs now and every SWEEP_SECONDS."""
        await asyncio.to_thread(self._load)
        self._sweeper = asyncio.create_task(self._sweep_every(SWEEP_SECONDS), name="export-jobs-sweep")

    async def stop(self) -> None:
        """Interrupt running jobs at their next piece and fail queued ones (both reported failed),
        and wait until their threads have let go of the warehouse."""
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def get(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id)

    def created_by(self, request: RequestRef) -> JobRecord | None:
        """The job an earlier request with this Idempotency-Key created, while it is kept."""
        return self._by_request.get(request.key)

    def file_of(self, record: JobRecord) -> Path:
        return self.directory / f"{record.id}.{record.extension}"

    def expires_at(self, record: JobRecord) -> dt.datetime | None:
        if self.retention is None or record.finished_at is None:
            return None
        return record.finished_at + self.retention

    def submit(self, owner: str, export: EventsExport, total_rows: int, request: RequestRef | None = None) -> JobRecord:
        """Queue `export`; it runs as soon as a slot is free."""
        record = JobRecord(
            id="export_" + secrets.token_hex(8),
            owner=owner,
            status="queued",
            format=export.format.name,  # type: ignore[arg-type]
            extension=export.format.extension,
            total_rows=total_rows,
            created_at=_now(),
            request=request,
        )
        self._keep(record)
        self._save(record)
        task = asyncio.create_task(self._run(record, export), name=f"export-job-{record.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return record

    async def _run(self, record: JobRecord, export: EventsExport) -> None:
        try:
            async with self._slots:
                if self._stopping.is_set():
                    raise JobInterrupted(STOPPED)
                record.status = "running"
                record.started_at = _now()
                self._save(record)
                await asyncio.to_thread(self._write, record, export)
        except Exception as exc:
            if not isinstance(exc, JobInterrupted):
                logger.warning("export job %s failed: %s", record.id, exc)
            self._finish(record, str(exc) or type(exc).__name__)
        else:
            self._finish(record, None)

    def _write(self, record: JobRecord, export: EventsExport) -> None:
        """The job's thread: the file written as `<id>.<ext>.partial`, renamed once complete."""
        final = self.file_of(record)
        partial = final.with_name(final.name + ".partial")

        def counted(rows: int) -> None:
            record.rows_written += rows

        try:
            chunks = file_chunks(self._warehouse, export, counted)
            with open(partial, "wb") as out, contextlib.closing(chunks):
                for chunk in chunks:
                    if self._stopping.is_set():
                        raise JobInterrupted(STOPPED)
                    out.write(chunk)
                    record.bytes_written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def _finish(self, record: JobRecord, error: str | None) -> None:
        record.status = "failed" if error is not None else "completed"
        record.error = error
        record.finished_at = _now()
        self._save(record)

    def _save(self, record: JobRecord) -> None:
        """Write the sidecar whole or not at all (a crash mid-write leaves the previous one)."""
        path = self.directory / (record.id + SIDECAR_SUFFIX)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(_encode_record(record))
        os.replace(temporary, path)

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*" + SIDECAR_SUFFIX)):
            try:
                record = _decode_record(path.read_bytes())
            except (OSError, msgspec.DecodeError) as exc:
                logger.warning("skipping export job sidecar %s: %s", path.name, exc)
                continue
            if record.status in UNFINISHED:
                # This process is new: whatever was running when the last one ended did not finish.
                partial = self.file_of(record)
                partial.with_name(partial.name + ".partial").unlink(missing_ok=True)
                self._finish(record, "interrupted by a restart of the service")
            self._keep(record)

    def _keep(self, record: JobRecord) -> None:
        self._jobs[record.id] = record
        if record.request is not None:
            self._by_request[record.request.key] = record

    async def _sweep_every(self, seconds: float) -> None:
        while True:
            self.sweep()
            await asyncio.sleep(seconds)

    def sweep(self, now: dt.datetime | None = None) -> list[str]:
        """Delete finished jobs past their retention, files and sidecars; returns their ids."""
        now = now or _now()
        expired = [r for r in self._jobs.values() if (at := self.expires_at(r)) is not None and at <= now]
        for record in expired:
            self.file_of(record).unlink(missing_ok=True)
            (self.directory / (record.id + SIDECAR_SUFFIX)).unlink(missing_ok=True)
            del self._jobs[record.id]
            if record.request is not None:
                self._by_request.pop(record.request.key, None)
        return [record.id for record in expired]
