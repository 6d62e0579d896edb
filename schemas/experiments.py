"""Experiments as the API shows them (API.md "Experiment Endpoints"), and their input types."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from msgspec import Meta

ExperimentName = Annotated[str, Meta(min_length=1, max_length=255)]
Description = Annotated[str, Meta(max_length=10_000)]
Tag = Annotated[str, Meta(min_length=1, max_length=100)]
Tags = Annotated[list[Tag], Meta(max_length=100)]
Config = dict[str, Any]


class ExperimentInput(msgspec.Struct, kw_only=True):
    """The fields a client sets (POST: `name` required; PATCH: any of them; `config` only while pending)."""

    name: ExperimentName
    description: Description = ""
    config: Config = {}
    tags: Tags = []


class ExperimentBody(msgspec.Struct, kw_only=True):
    experiment: ExperimentInput


class CloneInput(msgspec.Struct, kw_only=True):
    """The clone's name; "<name> (copy)" when absent."""

    name: ExperimentName | None = None


class RunSummary(msgspec.Struct, kw_only=True):
    id: str
    status: str
    progress: float


class ResultsSummary(msgspec.Struct, kw_only=True):
    """`best_accuracy` is the best value of the experiment's `config.metric` (default accuracy)."""

    best_accuracy: float | None = None
    metric: str = "accuracy"
    total_runs: int = 0
    completed_runs: int = 0
    failed_runs: int = 0


class ExperimentOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str
    status: str
    config: Config
    tags: list[str]
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    cloned_from: str | None = None
    error: str | None = None  # why a worker reported it failed


class ExperimentDetail(ExperimentOut, kw_only=True):
    progress: float = 0.0
    runs: list[RunSummary] = []
    results_summary: ResultsSummary = msgspec.field(default_factory=ResultsSummary)


class HistoryEntry(msgspec.Struct, kw_only=True):
    """One event of a resource's history, as `GET .../history` lists it."""

    offset: int
    type: str
    at: dt.datetime
    actor: str
    changes: dict[str, Any]
