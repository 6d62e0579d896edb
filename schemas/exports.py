"""Exports (API.md "Export Events", "Export Experiment"): what a client asks for, and export jobs."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from schemas.telemetry import StoredEvent

EventsFormat = Literal["csv", "jsonl", "parquet"]
ExperimentFormat = Literal["json", "zip"]
ExperimentPart = Literal["config", "results", "runs", "telemetry"]
JobStatus = Literal["queued", "running", "completed", "failed"]
FieldName = Annotated[str, Meta(min_length=1, max_length=256)]
FilterValue = Annotated[str, Meta(max_length=4096)]

EXPERIMENT_PARTS: tuple[ExperimentPart, ...] = ("config", "results", "runs", "telemetry")


class ExportFilters(msgspec.Struct, kw_only=True):
    """The filters of GET /api/v1/telemetry/events; `after`/`before` are ISO 8601 times (UTC without a zone)."""

    event_name: FilterValue | None = None
    experiment_id: FilterValue | None = None
    run_id: FilterValue | None = None
    model: FilterValue | None = None
    after: FilterValue | None = None
    before: FilterValue | None = None


class EventsExportInput(msgspec.Struct, kw_only=True):
    """`fields`: standard columns, `measurements.<key>` and `metadata.<key>` (default: every standard column).
    `async`: true always makes a job, false always streams; unset, a job once there are more rows than the
    server's `--export-async-rows`."""

    format: EventsFormat = "csv"
    filters: ExportFilters = msgspec.field(default_factory=ExportFilters)
    fields: list[FieldName] | None = None
    run_async: bool | None = msgspec.field(default=None, name="async")


class ExperimentExportInput(msgspec.Struct, kw_only=True):
    """`json`: one document; `zip`: a CSV per part and a manifest. `include` defaults to every part."""

    format: ExperimentFormat = "json"
    include: Annotated[list[ExperimentPart], Meta(max_length=len(EXPERIMENT_PARTS) * 2)] = msgspec.field(
        default_factory=lambda: list(EXPERIMENT_PARTS)
    )


class ExportJobAccepted(msgspec.Struct, kw_only=True):
    """The answer to an export that became a job (202)."""

    job_id: str
    status: JobStatus
    status_url: str
    download_url: str


class ExportJob(msgspec.Struct, kw_only=True):
    """An export job as `GET /api/v1/exports/:job_id` shows it; `progress` is rows_written / total_rows."""

    id: str
    status: JobStatus
    format: EventsFormat
    total_rows: int
    rows_written: int
    progress: float
    bytes_written: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    expires_at: dt.datetime | None
    error: str | None
    download_url: str | None


class ExperimentExportContent(msgspec.Struct, kw_only=True):
    """What a JSON experiment export holds: the experiment, the parts asked for, and the log
    positions it reflects (`resources`: an offset; `telemetry`: one per partition)."""

    experiment_id: str
    format_version: int
    include: list[ExperimentPart]
    positions: dict[str, Any]
    experiment: dict[str, Any]
    config: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    runs: list[dict[str, Any]] | None = None
    telemetry: list[StoredEvent] | None = None


class ExperimentExportDocument(msgspec.Struct, kw_only=True):
    """`POST /experiments/:id/export` with format json: the content, then the SHA-256 of its bytes as sent."""

    content: ExperimentExportContent
    sha256: Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]
