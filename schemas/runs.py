"""Runs as the API shows them (API.md "Run Endpoints"): runs, checkpoints, metric history, log lines."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

# Integral values (epochs, steps) are shown as integers: 45, not 45.0.
Number = int | float


class CheckpointOut(msgspec.Struct, kw_only=True):
    """A checkpoint a run reported and/or uploaded. Each of its `metrics` also appears
    beside these fields, by name, as in API.md (`"val_accuracy": 0.88`)."""

    id: str
    run_id: str
    epoch: Number | None = None
    metrics: dict[str, Number] = {}
    path: str | None = None
    reported_at: dt.datetime | None = None
    uploaded: bool = False
    size: int | None = None
    sha256: str | None = None
    uploaded_at: dt.datetime | None = None
    download_url: str | None = None


class RunOut(msgspec.Struct, kw_only=True):
    """`metrics`: the latest value of each measurement the run reported, with `current_epoch`."""

    id: str
    experiment_id: str
    status: str
    progress: float
    hyperparameters: dict[str, Any]
    metrics: dict[str, Number]
    started_at: dt.datetime
    completed_at: dt.datetime | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class RunDetail(RunOut, kw_only=True):
    checkpoints: list[CheckpointOut] = []


class MetricPoint(msgspec.Struct, kw_only=True):
    step: Number | None
    epoch: Number | None
    value: float
    timestamp: dt.datetime


class MetricHistory(msgspec.Struct, kw_only=True):
    """`total_points` were reported; `points` holds them all, or the lowest and the
    highest of each bucket when there were more than `max_points` (`downsampled`)."""

    run_id: str
    name: str
    total_points: int
    downsampled: bool
    points: list[MetricPoint]


class LogLine(msgspec.Struct, kw_only=True):
    timestamp: dt.datetime
    level: str
    message: str
