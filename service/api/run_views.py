"""Runs as the API shows them: the projection's lifecycle joined with SQL over the runs' telemetry.

A run's status, hyperparameters and uploads come from the resources log; its
progress, latest metrics and reported checkpoints from the warehouse, one query
per page of runs (not one per run).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec
from aiohttp import web

from schemas.experiments import ResultsSummary, RunSummary
from schemas.runs import CheckpointOut, Number, RunDetail, RunOut
from service.http.responses import warehouse_query
from service.resources.fold import Experiment, Run

# Measurements with a meaning of their own; every other one is a metric.
PROGRESS, EPOCH, STEP = "progress", "epoch", "step"
DEFAULT_METRIC = "accuracy"
# A metric is minimised when the experiment's config says so (`metric_goal: "min"`),
# or by default when its name says it is a loss or an error.
MINIMISED_WORDS = ("loss", "error", "perplexity")


class _Value(msgspec.Struct):
    run_id: str
    key: str
    value: float


class _ReportedCheckpoint(msgspec.Struct):
    run_id: str
    id: str
    path: str
    measurements: dict[str, float]
    timestamp: dt.datetime


class _Extremes(msgspec.Struct):
    highest: float | None
    lowest: float | None


_value_decoder = msgspec.json.Decoder(_Value)
_checkpoint_decoder = msgspec.json.Decoder(_ReportedCheckpoint)
_extremes_decoder = msgspec.json.Decoder(_Extremes)

Values = dict[str, dict[str, float]]  # run id → measurement → latest value


def number(value: float) -> Number:
    """45.0 → 45: epochs and steps read as the integers they are."""
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _ids(runs: Sequence[Run]) -> dict[str, list[str]]:
    return {
        "experiment_ids": sorted({run.experiment_id for run in runs}),
        "run_ids": [run.id for run in runs],
    }


async def latest_values(request: web.Request, runs: Sequence[Run], keys: Sequence[str] = ()) -> Values:
    """The latest value of each measurement (or of `keys`) the runs reported."""
    if not runs:
        return {}
    body = await warehouse_query(request, "run_latest_values", {**_ids(runs), "keys": list(keys)})
    values: Values = defaultdict(dict)
    for line in body.splitlines():
        if line:
            row = _value_decoder.decode(line)
            values[row.run_id][row.key] = row.value
    return values


def progress_of(run: Run, values: dict[str, float]) -> float:
    """1 once completed; else the latest progress reported, within 0..1 (0 before any)."""
    if run.status == "completed":
        return 1.0
    return min(max(values.get(PROGRESS, 0.0), 0.0), 1.0)


def run_out(run: Run, values: dict[str, float], kind: type[RunOut] = RunOut) -> Any:
    metrics: dict[str, Number] = {key: value for key, value in values.items() if key not in (PROGRESS, EPOCH, STEP)}
    if EPOCH in values:
        metrics["current_epoch"] = number(values[EPOCH])
    if STEP in values:
        metrics["current_step"] = number(values[STEP])
    return kind(
        id=run.id,
        experiment_id=run.experiment_id,
        status=run.status,
        progress=progress_of(run, values),
        hyperparameters=run.hyperparameters,
        metrics=metrics,
        started_at=run.started_at,
        completed_at=run.completed_at,
        error=run.error,
        created_at=run.created_at,
        updated_at=run.updated_at,
    )


async def runs_out(request: web.Request, runs: Sequence[Run]) -> list[RunOut]:
    values = await latest_values(request, runs)
    return [run_out(run, values.get(run.id, {})) for run in runs]


async def run_detail(request: web.Request, run: Run) -> dict[str, Any]:
    """The run with its checkpoints, as `GET /runs/:id` answers it."""
    values, checkpoints = await asyncio.gather(latest_values(request, [run]), checkpoints_of(request, run))
    detail = msgspec.to_builtins(run_out(run, values.get(run.id, {}), RunDetail))
    detail["checkpoints"] = [checkpoint_answer(checkpoint) for checkpoint in checkpoints]
    return detail  # type: ignore[no-any-return]


async def checkpoints_of(request: web.Request, run: Run) -> list[CheckpointOut]:
    """The run's checkpoints in the order reported: each with what the worker reported
    (epoch, metrics, path; the latest report wins) and what was uploaded (size, sha256).
    A checkpoint uploaded but not (yet) reported comes last."""
    body = await warehouse_query(request, "run_checkpoints", _ids([run]))
    reported: dict[str, _ReportedCheckpoint] = {}
    for line in body.splitlines():
        if line:
            row = _checkpoint_decoder.decode(line)
            reported.pop(row.id, None)  # a checkpoint reported again moves to its latest place
            reported[row.id] = row
    ids = list(reported) + [checkpoint_id for checkpoint_id in run.uploads if checkpoint_id not in reported]
    return [_checkpoint_out(run, checkpoint_id, reported.get(checkpoint_id)) for checkpoint_id in ids]


def _checkpoint_out(run: Run, checkpoint_id: str, report: _ReportedCheckpoint | None) -> CheckpointOut:
    checkpoint = CheckpointOut(id=checkpoint_id, run_id=run.id)
    if report is not None:
        measurements = report.measurements
        checkpoint.epoch = number(measurements[EPOCH]) if EPOCH in measurements else None
        checkpoint.metrics = {key: number(value) for key, value in measurements.items() if key != EPOCH}
        checkpoint.path = report.path or None
        checkpoint.reported_at = report.timestamp
    upload = run.uploads.get(checkpoint_id)
    if upload is not None:
        checkpoint.uploaded = True
        checkpoint.size = upload.size
        checkpoint.sha256 = upload.sha256
        checkpoint.uploaded_at = upload.uploaded_at
        checkpoint.download_url = f"/api/v1/runs/{run.id}/checkpoints/{checkpoint_id}/download"
    return checkpoint


def checkpoint_answer(checkpoint: CheckpointOut) -> dict[str, Any]:
    """API.md shows a checkpoint's metrics beside its fields, by name (a metric named like
    a field stays only under `metrics`)."""
    answer: dict[str, Any] = msgspec.to_builtins(checkpoint)
    for key, value in checkpoint.metrics.items():
        answer.setdefault(key, value)
    return answer


def metric_of(experiment: Experiment) -> str:
    metric = experiment.config.get("metric")
    return metric if isinstance(metric, str) and metric else DEFAULT_METRIC


def minimised(experiment: Experiment, metric: str) -> bool:
    goal = experiment.config.get("metric_goal")
    if goal in ("min", "max"):
        return goal == "min"
    return any(word in metric.casefold() for word in MINIMISED_WORDS)


async def experiment_runs(
    request: web.Request, experiment: Experiment, runs: Sequence[Run]
) -> tuple[list[RunSummary], ResultsSummary, float]:
    """The runs an experiment embeds, its results summary, and its progress (the mean of its runs')."""
    metric = metric_of(experiment)
    summary = ResultsSummary(
        metric=metric,
        total_runs=len(runs),
        completed_runs=sum(run.status == "completed" for run in runs),
        failed_runs=sum(run.status == "failed" for run in runs),
    )
    if not runs:
        return [], summary, 1.0 if experiment.status == "completed" else 0.0
    values, best = await asyncio.gather(
        latest_values(request, runs, (PROGRESS,)),
        warehouse_query(request, "experiment_best_metric", {"experiment_id": experiment.id, "metric": metric}),
    )
    extremes = _extremes_decoder.decode(best.splitlines()[0])
    summary.best_accuracy = extremes.lowest if minimised(experiment, metric) else extremes.highest
    embedded = [RunSummary(id=r.id, status=r.status, progress=progress_of(r, values.get(r.id, {}))) for r in runs]
    return embedded, summary, sum(r.progress for r in embedded) / len(embedded)
