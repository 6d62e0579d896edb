"""POST /api/v1/export/comparison (API.md "Export Comparison Report"): experiments' metrics side by side.

The metrics of an experiment are measurements of its telemetry. Named in `metrics`,
those; otherwise every measurement reported by run progress or completion events
(`crucible.run.progress`, `crucible.run.completed`) or evaluation events
(`crucible.eval*`), and each experiment's `config.metric`, except `progress` itself.
A metric's samples are all its values in the experiment's telemetry (only those of
`event_name` when given: `crucible.run.completed` compares the runs' final values).
Each cell is the mean with its t-based 95 % interval; the best experiment of each
metric (highest mean, lowest for lower-is-better metrics) is compared with every other
by Welch's t-test, Holm-adjusted beyond two experiments. One SQL query reads the
summaries of every experiment and metric.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
from aiohttp import web

from schemas.statistics import Comparison, ComparisonCell, ComparisonInput, ComparisonReport, ComparisonRow
from service.api.experiments import experiment_in
from service.core.errors import validation_error
from service.http.auth import requires
from service.http.bodies import check_fields, fields_of, parse_object, read_body
from service.http.responses import json_response, state_of, warehouse_query
from service.resources.fold import Experiment
from service.statistics.analysis import adjust_p_values, mean_interval, welch_p_value
from service.statistics.reports import render

routes = web.RouteTableDef()

COMPARISON_FIELDS = fields_of(ComparisonInput)
CONFIDENCE_LEVEL = 0.95
RUN_EVENT_BOOKKEEPING = frozenset({"progress"})  # run progress's own fraction done, not a metric
# Words that make a metric better when lower (by its name split on . _ - and spaces).
LOWER_IS_BETTER_WORDS = frozenset(
    {"loss", "error", "errors", "err", "latency", "duration", "perplexity", "ppl", "ms", "seconds", "time",
     "cost", "wer", "cer", "mse", "mae", "rmse"}
)  # fmt: skip


class _MetricRow(msgspec.Struct):
    experiment_id: str
    metric: str
    n: int
    mean: float
    std_dev: float | None
    from_runs: int


_metric_rows = msgspec.json.Decoder(_MetricRow)


def lower_is_better(metric: str) -> bool:
    return bool(LOWER_IS_BETTER_WORDS & set(re.split(r"[._\-\s]+", metric.lower())))


def choose_metrics(experiments: Sequence[Experiment], rows: Sequence[_MetricRow], named: list[str] | None) -> list[str]:
    """The metrics a report shows: those named, else run and evaluation measurements and config.metric."""
    present = {row.metric for row in rows}
    if named is not None:
        missing = [metric for metric in named if metric not in present]
        if missing:
            raise validation_error(
                f"no values of {missing[0]!r} in the telemetry of any of these experiments",
                {"metrics": [f"no values of {', '.join(repr(m) for m in missing)} in any experiment"]},
            )
        return list(dict.fromkeys(named))
    chosen = {row.metric for row in rows if row.from_runs > 0} - RUN_EVENT_BOOKKEEPING
    for experiment in experiments:
        configured = experiment.config.get("metric")
        if isinstance(configured, str) and configured in present:
            chosen.add(configured)
    if not chosen:
        raise validation_error(
            "these experiments have no run or evaluation metrics in their telemetry; name measurements in metrics",
            {"metrics": ["no run or evaluation metrics found: name the measurements to compare"]},
        )
    return sorted(chosen)


def build_comparison(
    experiments: Sequence[Experiment], rows: Sequence[_MetricRow], metrics: list[str], lower: set[str] | None
) -> Comparison:
    """Each experiment's cell per metric, the best of each metric, and Welch p-values against it."""
    by_key = {(row.experiment_id, row.metric): row for row in rows}
    directions = [lower_is_better(m) if lower is None else m in lower for m in metrics]
    table = [[_cell(by_key.get((e.id, metric))) for metric in metrics] for e in experiments]
    for column, lower_better in enumerate(directions):
        _mark_best(table, column, lower_better)
    return Comparison(
        metrics=metrics,
        lower_is_better=directions,
        rows=[
            ComparisonRow(experiment_id=e.id, name=e.name, cells=cells)
            for e, cells in zip(experiments, table, strict=True)
        ],
        confidence_level=CONFIDENCE_LEVEL,
        corrected=len(experiments) > 2,
    )


def _cell(row: _MetricRow | None) -> ComparisonCell:
    if row is None:
        return ComparisonCell(n=0)
    low, high = mean_interval(row.n, row.mean, row.std_dev, CONFIDENCE_LEVEL)
    return ComparisonCell(n=row.n, mean=row.mean, std_dev=row.std_dev, ci_low=low, ci_high=high)


def _mark_best(table: list[list[ComparisonCell]], column: int, lower_better: bool) -> None:
    cells = [row[column] for row in table]
    means = [c.mean for c in cells if c.mean is not None]
    if not means:
        return
    best_mean = min(means) if lower_better else max(means)
    best = next(c for c in cells if c.mean == best_mean)
    for cell in cells:
        cell.best = cell.mean == best_mean
    others = [c for c in cells if c is not best and c.mean is not None]
    p_values = [welch_p_value(_summary(best), _summary(c)) for c in others]
    known = [i for i, p in enumerate(p_values) if p is not None]
    adjusted = adjust_p_values([p_values[i] for i in known], "holm" if len(table) > 2 else "none")  # type: ignore[misc]
    for i, p in zip(known, adjusted, strict=True):
        others[i].p_value_vs_best = p


def _summary(cell: ComparisonCell) -> tuple[int, float, float | None]:
    assert cell.mean is not None
    return cell.n, cell.mean, cell.std_dev


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@routes.post("/api/v1/export/comparison")
@requires("read", limit="export")
async def export_comparison(request: web.Request) -> web.Response:
    """A report comparing 2-10 experiments' metrics: LaTeX (booktabs), Markdown, HTML or CSV."""
    values: dict[str, Any] = check_fields(parse_object(await read_body(request)), COMPARISON_FIELDS, "a comparison")
    options = ComparisonInput(**values)
    if len(set(options.experiment_ids)) < len(options.experiment_ids):
        raise validation_error("Experiment_ids name an experiment twice", {"experiment_ids": ["must not repeat"]})
    state = state_of(request)
    experiments = [experiment_in(state, experiment_id) for experiment_id in options.experiment_ids]
    params = {
        "experiment_ids": options.experiment_ids,
        "metrics": options.metrics or [],
        "event_name": options.event_name,
    }
    body = await warehouse_query(request, "comparison_metrics", params)
    rows = [_metric_rows.decode(line) for line in body.splitlines() if line]
    metrics = choose_metrics(experiments, rows, options.metrics)
    lower = set(options.lower_is_better) if options.lower_is_better is not None else None
    comparison = build_comparison(experiments, rows, metrics, lower)
    report = render(comparison, options.format, options.template, options.caption, options.label)
    if wants_json(request):
        answer = ComparisonReport(
            format=options.format,
            filename=report.filename,
            content_type=report.content_type,
            content=report.content,
            comparison=comparison,
        )
        return json_response({"data": answer})
    return web.Response(
        body=report.content.encode(),
        headers={
            "Content-Type": report.content_type,
            "Content-Disposition": f'attachment; filename="{report.filename}"',
        },
    )
