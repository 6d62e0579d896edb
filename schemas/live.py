"""Payloads of the live API: what WebSocket channels and the telemetry stream push and take.

The names and fields are API.md's "WebSocket API" tables; fields beyond them are
additions a client may ignore. Telemetry events themselves are `StoredEvent`
(schemas/telemetry.py), the shape of `GET /api/v1/telemetry/events`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from msgspec import Meta

EventType = Annotated[str, Meta(min_length=1, max_length=256)]


class EventTypes(msgspec.Struct, kw_only=True):
    """A telemetry channel's `subscribe`/`unsubscribe` payload (and optional join parameters).

    A type matches an event name equal to it or ending with `.` and it
    (`model.inference` matches `crucible.model.inference`)."""

    event_types: Annotated[list[EventType], Meta(max_length=100)] = []


class Filter(msgspec.Struct, kw_only=True):
    """The answer to a telemetry channel's join, subscribe and unsubscribe: the types it
    receives now (null: all events)."""

    event_types: list[str] | None


class StatusChanged(msgspec.Struct, kw_only=True, omit_defaults=True):
    """`status_changed` on `experiment:<id>`; also the answer to joining it."""

    status: str
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None


class ProgressUpdated(msgspec.Struct, kw_only=True):
    """`progress_updated` on `experiment:<id>`: the mean progress (0..1) of the runs that
    reported one, and the seconds left at the rate observed (null until it can be told)."""

    progress: float
    eta_seconds: int | None
    run_id: str


class RunStatusChanged(msgspec.Struct, kw_only=True):
    """`run_status_changed` on `experiment:<id>`: one of its runs started, completed, failed
    (reported by its worker, or for want of telemetry: `error` "no telemetry for N s"), or
    runs again after such a failure because its worker reported again."""

    run_id: str
    status: str
    error: str | None
    completed_at: dt.datetime | None


class RunCompletedPush(msgspec.Struct, kw_only=True):
    """`run_completed`: the run's latest metrics, as this channel saw them, and its final ones."""

    run_id: str
    metrics: dict[str, float]


class LiveError(msgspec.Struct, kw_only=True):
    """`error` on a channel, and the `response` of an `error` reply (with `reason`, Phoenix's word)."""

    message: str
    code: str


class JoinRefusal(msgspec.Struct, kw_only=True):
    """The `response` of a refused join or request: Phoenix's `reason`, and the API's error code."""

    reason: str
    code: str


class ProcessStats(msgspec.Struct, kw_only=True):
    cpu: float  # percent of one core
    memory: float  # percent of the host's memory
    rss_bytes: int


class SystemStats(msgspec.Struct, kw_only=True):
    """`system_stats` on `dashboard:<user>`: host percentages, GPU utilization (null without
    one), and the API process's own figures."""

    cpu: float
    memory: float
    gpu: float | None
    process: ProcessStats


class ExperimentSummary(msgspec.Struct, kw_only=True):
    """`experiment_summary` on `dashboard:<user>`: experiments running now, and those that
    completed since midnight UTC."""

    active: int
    completed_today: int
