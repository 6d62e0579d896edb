"""LaTeX comparison reports, without the app: what the escaper does with every character, and
that every document compiles with pdflatex and fits the page whatever the names and count.

The compiling tests run pdflatex when it is installed (.ci/run installs it where it can) and
skip, saying so, where it is not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from schemas.statistics import Comparison, ComparisonCell, ComparisonRow
from service.statistics.reports import LATEX_TEXT_RANGES, latex_escape, latex_wrappable, render_latex

SPECIALS = "# $ % & ~ _ ^ \\ { } [x] *star* <<a>> a--b---c ,,low'' ``q`` !` ?` \"q\" |"
# Every C0 control but tab and newline, DEL and every C1 control.
CONTROLS = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in "\t\n")
UNICODE = "模型 🚀 Größe Ελληνικά кириллица e\u0301 \u202eevil \u200bzero \N{LATIN SMALL LETTER LONG S}"
LONG = "validation_accuracy_top1_imagenet_v2_with_a_rather_long_suffix"
UNBROKEN = "W" * 80


def comparison(names: list[str], metrics: list[str]) -> Comparison:
    """Made-up numbers: each experiment a little worse than the one before, on every metric."""
    rows = []
    for i, name in enumerate(names):
        cells = [
            ComparisonCell(
                n=10,
                mean=0.9 - i / 100,
                std_dev=0.02,
                ci_low=0.88 - i / 100,
                ci_high=0.92 - i / 100,
                best=i == 0,
                p_value_vs_best=None if i == 0 else 10.0 ** -(i % 5),
            )
            for _ in metrics
        ]
        rows.append(ComparisonRow(experiment_id=f"exp_{i}", name=name, cells=cells))
    if len(names) > 2:
        rows[-1].cells[0] = ComparisonCell(n=0)  # a metric an experiment never reported
    return Comparison(
        metrics=metrics, lower_is_better=[m.endswith("loss") for m in metrics], rows=rows, corrected=len(names) > 2
    )


def in_a_document(table: str) -> str:
    """The `table` template as a user includes it: their preamble, booktabs and graphicx."""
    return "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage[T1]{fontenc}",
            r"\usepackage{booktabs}",
            r"\usepackage{graphicx}",
            r"\begin{document}",
            table,
            r"\end{document}",
            "",
        ]
    )


def compile_latex(directory: Path, text: str) -> str:
    """pdflatex's log of `text`; fails the test when pdflatex stops or a glyph is missing."""
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed on this machine: the LaTeX report was not compiled")
    (directory / "report.tex").write_text(text, encoding="utf-8")
    done = subprocess.run(
        # \tracinglostchars makes a character the font has no glyph for show in the log.
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", r"\tracinglostchars=1 \input{report.tex}"],
        cwd=directory,
        capture_output=True,
        timeout=180,
    )
    log = (directory / "report.log").read_text(encoding="latin-1")
    assert done.returncode == 0, log[-3000:]
    assert (directory / "report.pdf").stat().st_size > 0
    assert "Missing character" not in log, re.findall(r"Missing character.*", log)
    return log


def assert_fits(log: str) -> None:
    overfull = [line for line in log.splitlines() if line.startswith("Overfull \\hbox")]
    assert not overfull, overfull


# -- the escaper ----------------------------------------------------------------------------------


def test_control_characters_are_shown_as_their_code_points() -> None:
    assert latex_escape("a\x01b\x7fc\x80\x9fd") == r"a\texttt{[U+0001]}b\texttt{[U+007F]}c\texttt{[U+0080 U+009F]}d"
    assert latex_escape("tab\there\nnext\r\nline") == "tab here next line"  # whitespace, not controls


def test_characters_pdflatex_cannot_set_are_shown_as_their_code_points() -> None:
    assert latex_escape("模型-v2 🚀") == r"\texttt{[U+6A21 U+578B]}-v2 \texttt{[U+1F680]}"
    assert latex_escape("Größe \N{EN DASH} Łódź Şişli") == "Größe \N{EN DASH} Łódź Şişli"
    assert latex_escape("e\u0301") == "é"  # composed first, so the accent is kept
    assert latex_escape("\u202eevil") == r"\texttt{[U+202E]}evil"  # a bidi override is shown, not obeyed


def test_ligatures_and_optional_arguments_are_broken() -> None:
    # T1 fonts make -- a dash, ,, and '' quotes; a row starting with [ or * would be read by \\ or \midrule.
    assert latex_escape("a--b---c ,,d") == "a-{}-b-{}-{}-c ,{},d"
    assert latex_escape("it's `x`") == r"it\textquotesingle{}s \textasciigrave{}x\textasciigrave{}"
    assert latex_escape("[seed 1] *best*") == "{[}seed 1{]} {*}best{*}"


def test_every_character_the_escaper_passes_through_compiles(tmp_path: Path) -> None:
    passed = "".join(chr(c) for low, high in LATEX_TEXT_RANGES for c in range(low, high + 1))
    assert "\\texttt" not in latex_escape(passed)
    lines = [latex_escape(passed[i : i + 40]) + r"\par" for i in range(0, len(passed), 40)]
    document = in_a_document("\n".join(lines)).replace(r"\usepackage{booktabs}", r"\usepackage[utf8]{inputenc}")
    compile_latex(tmp_path, document)


def test_only_words_too_long_for_their_box_get_places_to_break() -> None:
    assert latex_wrappable("val_loss top-1", 12) == r"val\_loss top-1"
    wrapped = latex_wrappable("eval/perplexity_wikitext103", 6)
    assert wrapped == (
        r"eval/\allowbreak{}perpl\penalty50{}exity\penalty50{}\_\allowbreak{}wikit\penalty50{}ext10\penalty50{}3"
    )
    # W is about 1.2em wide and … 1.5em: at most five of them between two places to break, in 12em.
    for wide in ("W", "\N{HORIZONTAL ELLIPSIS}"):
        pieces = re.split(r"\\allowbreak\{\}|\\penalty50\{\}", latex_wrappable(wide * 40, 12))
        assert max(len(piece) for piece in pieces) == 5


# -- whole documents ------------------------------------------------------------------------------

NAME_SETS = {
    "specials": [SPECIALS, "[bracket first", "*star first", "plain"],
    "controls": [CONTROLS, "x" + CONTROLS[:5] + "y", "plain"],
    "unicode": [UNICODE, "Łódź \N{EN DASH} “quoted” …", "plain"],
    "long": [LONG + "_experiment", UNBROKEN, "\N{HORIZONTAL ELLIPSIS}\N{PER MILLE SIGN}" * 30, "short"],
}


@pytest.mark.parametrize("template", ["publication", "table"])
@pytest.mark.parametrize("names", list(NAME_SETS), ids=list(NAME_SETS))
def test_documents_with_hostile_names_compile_and_fit(tmp_path: Path, names: str, template: str) -> None:
    experiments = NAME_SETS[names]
    metrics = ["accuracy", experiments[0][:128], "val_loss", LONG, experiments[2][:128]]
    report = render_latex(comparison(experiments, metrics), template, caption=experiments[0], label="tab:x")
    log = compile_latex(tmp_path, report if template == "publication" else in_a_document(report))
    assert_fits(log)


@pytest.mark.parametrize("count", [2, 3, 10])
@pytest.mark.parametrize("metric_count", [1, 4, 12])
def test_any_number_of_experiments_and_metrics_fits_the_page(tmp_path: Path, count: int, metric_count: int) -> None:
    metrics = [f"eval/{LONG[: 10 + 9 * i]}_loss" for i in range(metric_count)]
    names = [f"resnet50-lr0.{i}-bs256-warmup5-cosine-seed{i}" for i in range(count)]
    log = compile_latex(tmp_path, render_latex(comparison(names, metrics), "publication", None, "tab:comparison"))
    assert_fits(log)


def test_four_long_metric_names_fit_the_page(tmp_path: Path) -> None:
    """The issue's case: four metrics with long names ran off the page, as only wider tables were scaled."""
    metrics = [f"{LONG}_{i}" for i in range(4)]
    log = compile_latex(tmp_path, render_latex(comparison(["a", "b"], metrics), "publication", None, "tab:c"))
    assert_fits(log)
