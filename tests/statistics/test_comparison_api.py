"""POST /api/v1/export/comparison: experiments' metrics in LaTeX, Markdown, HTML and CSV.

Accuracy values are the data sets A, B, C of tests/statistics/test_statistics.py; the expected intervals
and p-values are literals computed once with scipy (t.interval, ttest_ind with equal_var=False).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from schemas.statistics import ComparisonCell
from service.statistics.reports import latex_escape, markdown_escape, mean_and_margin, spreadsheet_safe
from tests.api.test_queries_api import ingest, wait_stored
from tests.keys_support import auth, create_key
from tests.resource_helpers import create_experiment, error
from tests.statistics.test_reports_latex import assert_fits, compile_latex
from tests.statistics.test_statistics import A, B, C

EXPORT = "/api/v1/export/comparison"
NAMES = ["Ens & v1: 50% $x_1$ #1 {a} ~^\\", "<script>alert(1)</script> | pipe *bold*", "=SUM(A1)"]
# t-based 95 % intervals of the means of A, B, C (scipy.stats.t.interval, 9 degrees of freedom).
INTERVALS = {
    "A": (0.8715295641105409, 0.9084704358894591),
    "B": (0.8033222664615712, 0.8426777335384289),
    "C": (0.8369394295310921, 0.8630605704689078),
}
# Welch's p-values against A (the best), raw and Holm-adjusted over the two comparisons.
P_VS_A = {"B": 2.53507216397784e-05, "C": 0.0010094474504530851}


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9)


def run_events(experiment_id: str, values: list[float], offset: float) -> list[dict[str, Any]]:
    """Progress events with accuracy, val_loss and the run's own progress; inference latency beside them."""
    events = []
    for i, value in enumerate(values):
        events.append(
            {
                "event_name": ["crucible", "run", "progress"],
                "measurements": {"accuracy": value, "val_loss": 1 - value + offset, "progress": i / 10},
                "metadata": {"experiment_id": experiment_id, "run_id": f"run_{i}"},
            }
        )
        events.append(
            {
                "event_name": ["crucible", "model", "inference"],
                "measurements": {"latency_ms": 200.0 + 10 * i + 100 * offset},
                "metadata": {"experiment_id": experiment_id},
            }
        )
    return events


@pytest.fixture
async def experiments(client: TestClient) -> list[str]:
    ids = []
    events: list[dict[str, Any]] = []
    for n, (name, values) in enumerate(zip(NAMES, (A, B, C), strict=True)):
        created = await create_experiment(client, name, config={"metric": "accuracy"})
        ids.append(created["id"])
        events += run_events(created["id"], values, n)
    await ingest(client, events)
    await wait_stored(client, len(events))
    return ids


async def export(client: TestClient, ids: list[str], status: int = 200, **fields: Any) -> Any:
    answer = await client.post(EXPORT, json={"experiment_ids": ids, **fields})
    text = await answer.text()
    assert answer.status == status, text
    return answer, text


async def numbers(client: TestClient, ids: list[str], **fields: Any) -> dict[str, Any]:
    answer = await client.post(EXPORT, json={"experiment_ids": ids, **fields}, headers={"Accept": "application/json"})
    assert answer.status == 200, await answer.text()
    return dict((await answer.json())["data"])


# -- the numbers ---------------------------------------------------------------------------------


async def test_default_metrics_are_run_metrics_with_intervals_and_welch_p_values(
    client: TestClient, experiments: list[str]
) -> None:
    data = await numbers(client, experiments)
    comparison = data["comparison"]
    assert comparison["metrics"] == ["accuracy", "val_loss"]  # progress itself and inference latency left out
    assert comparison["lower_is_better"] == [False, True]
    assert comparison["corrected"] is True
    cells = [row["cells"][0] for row in comparison["rows"]]
    for cell, name in zip(cells, "ABC", strict=True):
        assert cell["n"] == 10
        assert (cell["ci_low"], cell["ci_high"]) == (approx(INTERVALS[name][0]), approx(INTERVALS[name][1]))
    assert [c["best"] for c in cells] == [True, False, False]
    assert cells[0]["p_value_vs_best"] is None
    assert cells[1]["p_value_vs_best"] == approx(2 * P_VS_A["B"])  # Holm: the smaller of two, doubled
    assert cells[2]["p_value_vs_best"] == approx(P_VS_A["C"])
    assert [row["name"] for row in comparison["rows"]] == NAMES
    assert data["format"] == "latex" and data["filename"] == "comparison.tex"


async def test_lower_is_better_metrics_make_the_lowest_mean_best(client: TestClient, experiments: list[str]) -> None:
    comparison = (await numbers(client, experiments, metrics=["latency_ms"]))["comparison"]
    assert comparison["lower_is_better"] == [True]
    assert [row["cells"][0]["best"] for row in comparison["rows"]] == [True, False, False]
    flipped = (await numbers(client, experiments, metrics=["latency_ms"], lower_is_better=[]))["comparison"]
    assert [row["cells"][0]["best"] for row in flipped["rows"]] == [False, False, True]


async def test_two_experiments_are_not_corrected(client: TestClient, experiments: list[str]) -> None:
    comparison = (await numbers(client, experiments[:2], metrics=["accuracy"]))["comparison"]
    assert comparison["corrected"] is False
    assert comparison["rows"][1]["cells"][0]["p_value_vs_best"] == approx(P_VS_A["B"])


async def test_event_name_restricts_the_samples(client: TestClient, experiments: list[str]) -> None:
    only_inference = {"metrics": ["latency_ms"], "event_name": "crucible.model.inference"}
    comparison = (await numbers(client, experiments, **only_inference))["comparison"]
    assert [row["cells"][0]["n"] for row in comparison["rows"]] == [10, 10, 10]
    payload = {"experiment_ids": experiments, "metrics": ["accuracy"], "event_name": "crucible.model.inference"}
    problem = await error(client, "POST", EXPORT, 422, "validation_error", json=payload)
    assert problem["details"] == {"metrics": ["no values of 'accuracy' in any experiment"]}


# -- the formats ---------------------------------------------------------------------------------


async def test_latex_is_a_booktabs_document_with_the_best_in_bold(client: TestClient, experiments: list[str]) -> None:
    answer, text = await export(client, experiments, format="latex", template="publication")
    assert answer.headers["Content-Type"] == "application/x-latex"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="comparison.tex"'
    for command in (r"\usepackage{booktabs}", r"\toprule", r"\midrule", r"\bottomrule", r"\label{tab:comparison}"):
        assert command in text
    assert r"\caption{Comparison of 3 experiments: mean $\pm$ half-width of the 95\,\% confidence interval" in text
    assert r"{\boldmath$0.890 \pm 0.018$}" in text  # A: 0.89 ± 0.01847, two significant digits of the margin
    assert r"$0.823 \pm 0.020$" in text
    assert r"accuracy $\uparrow$ & val\_loss $\downarrow$" in text
    assert r"Ens \& v1: 50\% \$x\_1\$ \#1 \{a\} \textasciitilde{}\textasciicircum{}\textbackslash{}" in text
    assert r"\textless{}script\textgreater{}" in text
    assert "& best &" in text and "$<0.001$" in text and "0.001" in text


async def test_latex_compiles_with_pdflatex(client: TestClient, experiments: list[str], tmp_path: Path) -> None:
    _, text = await export(client, experiments, format="latex", caption="Accuracy & loss: 100% of runs")
    assert_fits(compile_latex(tmp_path, text))


async def test_the_table_template_has_no_preamble(client: TestClient, experiments: list[str]) -> None:
    _, text = await export(client, experiments, template="table", label="tab:runs")
    assert r"\documentclass" not in text and r"\begin{table}" in text
    assert r"\label{tab:runs}" in text and r"\label{tab:runs-p}" in text


async def test_markdown_escapes_names(client: TestClient, experiments: list[str]) -> None:
    answer, text = await export(client, experiments, format="markdown")
    assert answer.headers["Content-Type"] == "text/markdown; charset=utf-8"
    lines = text.splitlines()
    assert "| Experiment | accuracy ↑ | val\\_loss ↓ |" in lines
    row = next(line for line in lines if "script" in line)
    assert row.startswith("| \\<script\\>alert\\(1\\)\\</script\\> \\| pipe \\*bold\\* (`")
    assert row.count(" | ") == 2  # the pipe in the name does not split the cell
    assert "**0.890 ± 0.018** (n = 10)" in text


async def test_html_escapes_names(client: TestClient, experiments: list[str]) -> None:
    answer, text = await export(client, experiments, format="html")
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<strong>0.890 ± 0.018</strong>" in text
    assert text.startswith("<!DOCTYPE html>")


async def test_csv_has_a_row_per_experiment_and_metric(client: TestClient, experiments: list[str]) -> None:
    answer, text = await export(client, experiments, format="csv")
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6
    first = rows[0]
    assert (first["experiment_id"], first["metric"], first["best"]) == (experiments[0], "accuracy", "true")
    assert float(first["ci_low"]) == approx(INTERVALS["A"][0])
    assert rows[4]["experiment_name"] == "'=SUM(A1)"  # not a formula in a spreadsheet
    assert float(rows[2]["p_value_vs_best"]) == approx(2 * P_VS_A["B"])


# -- escaping and rounding, without the app ------------------------------------------------------


def test_latex_escape_covers_every_special_and_unknown_characters() -> None:
    assert latex_escape('a&b%c$d#e_f{g}h~i^j\\k<l>m|n"o') == (
        r"a\&b\%c\$d\#e\_f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
        r"\textless{}l\textgreater{}m\textbar{}n\textquotedbl{}o"
    )
    assert latex_escape("Größe \N{EN DASH} 模型\nv2") == "Größe \N{EN DASH} \\texttt{[U+6A21 U+578B]} v2"


def test_markdown_and_spreadsheet_escapes() -> None:
    assert markdown_escape("a|b*c_d`e &amp; $x$") == "a\\|b\\*c\\_d\\`e \\&amp; \\$x\\$"
    assert spreadsheet_safe("+1") == "'+1" and spreadsheet_safe("plain") == "plain"


@pytest.mark.parametrize(
    ("mean", "low", "high", "expected"),
    [
        (0.89, 0.8715, 0.9085, ("0.890", "0.018")),
        (234.06, 228.86, 239.26, ("234.1", "5.2")),
        (1234.5, 1100.0, 1369.0, ("1234", "134")),
        (0.5, None, None, ("0.5", None)),
    ],
)
def test_means_are_rounded_to_their_margin(
    mean: float, low: float | None, high: float | None, expected: tuple[str, str | None]
) -> None:
    assert mean_and_margin(ComparisonCell(n=10, mean=mean, ci_low=low, ci_high=high)) == expected


# -- errors and limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"experiment_ids": ["exp_1"]}, "experiment_ids"),
        ({"experiment_ids": [f"exp_{i}" for i in range(11)]}, "experiment_ids"),
        ({"experiment_ids": ["exp_1", "exp_1"]}, "experiment_ids"),
        ({}, "experiment_ids"),
        ({"experiment_ids": ["exp_1", "exp_2"], "format": "pdf"}, "format"),
        ({"experiment_ids": ["exp_1", "exp_2"], "template": "poster"}, "template"),
        ({"experiment_ids": ["exp_1", "exp_2"], "label": "tab:a b}"}, "label"),
        ({"experiment_ids": ["exp_1", "exp_2"], "metrics": []}, "metrics"),
        ({"experiment_ids": ["exp_1", "exp_2"], "colour": "red"}, "colour"),
    ],
)
async def test_bad_bodies_are_422(client: TestClient, payload: dict[str, Any], field: str) -> None:
    problem = await error(client, "POST", EXPORT, 422, "validation_error", json=payload)
    assert field in problem["details"]


async def test_an_unknown_experiment_is_404(client: TestClient, experiments: list[str]) -> None:
    problem = await error(client, "POST", EXPORT, 404, "not_found", json={"experiment_ids": [experiments[0], "exp_x"]})
    assert problem["message"] == "experiment exp_x not found"


async def test_a_metric_without_values_is_422(client: TestClient, experiments: list[str]) -> None:
    problem = await error(
        client, "POST", EXPORT, 422, "validation_error", json={"experiment_ids": experiments, "metrics": ["bleu"]}
    )
    assert problem["details"] == {"metrics": ["no values of 'bleu' in any experiment"]}


async def test_experiments_without_run_metrics_are_422(client: TestClient) -> None:
    ids = [(await create_experiment(client, f"Empty {n}"))["id"] for n in range(2)]
    problem = await error(client, "POST", EXPORT, 422, "validation_error", json={"experiment_ids": ids})
    assert "metrics" in problem["details"]


async def test_exports_count_against_the_export_limit(client: TestClient, experiments: list[str]) -> None:
    key = await create_key(client, "read", export=1)
    payload = {"experiment_ids": experiments, "format": "csv"}
    first = await client.post(EXPORT, json=payload, headers=auth(key["secret"]))
    assert first.status == 200
    assert first.headers["X-RateLimit-Limit"] == "1"
    second = await client.post(EXPORT, json=payload, headers=auth(key["secret"]))
    assert second.status == 429
    assert (await second.json())["error"]["code"] == "rate_limited"


async def test_exports_need_the_read_scope(client: TestClient, experiments: list[str]) -> None:
    key = await create_key(client, "ingest")
    answer = await client.post(EXPORT, json={"experiment_ids": experiments}, headers=auth(key["secret"]))
    assert answer.status == 403
