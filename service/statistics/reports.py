"""Comparison reports rendered as LaTeX (booktabs), Markdown, HTML or CSV, from their numbers.

Every text that comes from a user (experiment names, metric names, a caption) is
escaped for its format here, and nowhere else. LaTeX compiles with a plain pdflatex:
it needs the T1 font encoding, booktabs and graphicx only. Characters pdflatex cannot set
there (controls, and beyond Latin-1, Latin Extended-A and common typography: CJK, Greek,
Cyrillic, emoji...) are shown as their code points, long names wrap, and a table wider
than the line is scaled down to it.
"""

from __future__ import annotations

import csv
import html
import io
import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from schemas.statistics import Comparison, ComparisonCell

# The characters pdflatex sets with inputenc utf8 and the T1 and TS1 font encodings (each was
# compiled by tests/statistics/test_reports_latex.py): printable ASCII, Latin-1, the Latin Extended-A letters
# T1 has, Romanian's comma letters, and common typography. Anything else is shown as its code point.
LATEX_TEXT_RANGES = (
    (0x20, 0x7E),
    (0xA0, 0x125),
    (0x128, 0x137),
    (0x139, 0x13E),
    (0x141, 0x148),
    (0x14A, 0x165),
    (0x168, 0x17E),
    (0x218, 0x21B),
    (0x2013, 0x2014),
    (0x2018, 0x201A),
    (0x201C, 0x201E),
    (0x2020, 0x2022),
    (0x2026, 0x2026),
    (0x2030, 0x2030),
    (0x2039, 0x203A),
    (0x20AC, 0x20AC),
    (0x2122, 0x2122),
    (0x2190, 0x2193),
)
_LATEX_TEXT = frozenset(chr(c) for low, high in LATEX_TEXT_RANGES for c in range(low, high + 1))
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    '"': r"\textquotedbl{}",
    # T1 fonts would set these as curly quotes, and `` '' !` ?` as ligatures: show what was typed.
    "'": r"\textquotesingle{}",
    "`": r"\textasciigrave{}",
    # After \\ or \midrule, a cell starting with [ or * would be taken as their optional argument or star.
    "[": "{[}",
    "]": "{]}",
    "*": "{*}",
}
# T1 fonts join these pairs into one glyph (-- en dash, ,, low quotes): an empty group keeps them apart.
_LATEX_LIGATURES = frozenset({("-", "-"), (",", ",")})
# Whitespace in a name or caption becomes one space; every other control or format character is shown.
_WHITESPACE_CATEGORIES = frozenset({"Zs", "Zl", "Zp"})
_MARKDOWN_SPECIAL = frozenset("\\`*_{}[]<>()#+-.!|~&$")
_SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Rendered:
    content: str
    content_type: str
    filename: str


# -- escaping --------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _latex_units(text: str) -> list[tuple[str, str]]:
    """(the text, its LaTeX) of each character; a run of characters LaTeX cannot set is one unit.

    Text is composed first (e + combining acute is é), whitespace collapses to single spaces,
    and what pdflatex has no glyph for, or would stop on (controls), is shown as its code points
    in typewriter type, so it compiles and two names that differ there still look different.
    """
    units: list[tuple[str, str]] = []
    unknown: list[str] = []

    def flush_unknown() -> None:
        if unknown:
            codes = " ".join(f"U+{ord(char):04X}" for char in unknown)
            units.append(("".join(unknown), f"\\texttt{{[{codes}]}}"))
            unknown.clear()

    for char in unicodedata.normalize("NFC", text):
        if char in "\t\n\r" or unicodedata.category(char) in _WHITESPACE_CATEGORIES:
            char = " "
        if char not in _LATEX_TEXT:
            unknown.append(char)
            continue
        flush_unknown()
        if char == " " and (not units or units[-1][0] == " "):
            continue
        units.append((char, _LATEX_SPECIAL.get(char, char)))
    flush_unknown()
    while units and units[-1][0] == " ":
        units.pop()
    return units


def _join_latex(units: list[tuple[str, str]], separator: Callable[[str, str], str]) -> str:
    """The units' LaTeX, with separator(this text, next text) between each two."""
    out = []
    for i, (raw, latex) in enumerate(units):
        out.append(latex)
        if i + 1 < len(units):
            out.append(separator(raw, units[i + 1][0]))
    return "".join(out)


def _code_points(raw: str) -> bool:
    """Whether a unit is a run of characters shown as code points."""
    return raw[0] not in _LATEX_TEXT


def _keep_apart(raw: str, following: str) -> str:
    return "{}" if (raw[-1], following[0]) in _LATEX_LIGATURES else ""


def latex_escape(text: str) -> str:
    """Text for LaTeX's text mode, on one line: specials escaped, ligatures broken, and
    characters pdflatex cannot set shown as their code points (`\\texttt{[U+6A21]}`)."""
    return _join_latex(_latex_units(text), _keep_apart)


# In a word too long for its box, TeX may break a line after these freely, and elsewhere
# (penalised, so only when nothing better is left) often enough that no piece is wider than the box.
_WRAP_AFTER = frozenset("_/.:-")
# The characters wider than 1em in T1 roman, bold included (Æ M Œ W Ŵ © ® ‰ … — ← →); none is wider than 2em.
_WIDE = frozenset("\u00c6M\u0152W\u0174\u00a9\u00ae\u2030\u2026\u2014\u2190\u2192")


def _unit_length(raw: str) -> int:
    """About how many characters wide a unit is once set: a code point is about 8 letters wide."""
    return 8 * len(raw) + 1 if _code_points(raw) else len(raw)


def _set_length(text: str) -> int:
    return sum(_unit_length(raw) for raw, _ in _latex_units(text))


def _unit_em(raw: str) -> int:
    """At most how many em a unit is wide (a code point, [U+10FFFF] in typewriter type, is 5.25em)."""
    return 6 * len(raw) if _code_points(raw) else (2 if raw in _WIDE else 1)


def latex_wrappable(text: str, width: int) -> str:
    """latex_escape's text for a box `width` em wide, where each word that might not fit gets
    places to break: no piece between two is wider than the box, whatever the name."""
    words: list[list[tuple[str, str]]] = [[]]
    for unit in _latex_units(text):
        if unit[0] == " ":
            words.append([])
        else:
            words[-1].append(unit)
    run = 0  # em since the last place to break, at most

    def breaking(raw: str, following: str) -> str:
        nonlocal run
        run += _unit_em(raw)
        if raw[-1] in _WRAP_AFTER or _code_points(raw) or _code_points(following):
            run = 0
            return r"\allowbreak{}"
        if run + _unit_em(following) > width - 1:
            run = 0
            return r"\penalty50{}"
        return _keep_apart(raw, following)

    parts = []
    for word in words:
        run = 0
        fits = sum(_unit_em(raw) for raw, _ in word) <= width - 1
        parts.append(_join_latex(word, _keep_apart if fits else breaking))
    return " ".join(parts)


def markdown_escape(text: str) -> str:
    """Text for a Markdown table cell: ASCII punctuation backslash-escaped (CommonMark), one line."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in _one_line(text))


def html_escape(text: str) -> str:
    return html.escape(text, quote=True)


def spreadsheet_safe(text: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + text if text.startswith(_SPREADSHEET_FORMULA) else text


# -- numbers ---------------------------------------------------------------------------------


def half_width(cell: ComparisonCell) -> float | None:
    if cell.mean is None or cell.ci_low is None or cell.ci_high is None:
        return None
    return (cell.ci_high - cell.ci_low) / 2


def mean_and_margin(cell: ComparisonCell) -> tuple[str, str | None] | None:
    """The mean and the interval's half-width, rounded to the half-width's two significant digits."""
    if cell.mean is None:
        return None
    margin = half_width(cell)
    if margin is None or margin <= 0 or not math.isfinite(margin):
        return f"{cell.mean:.4g}", None
    decimals = min(max(1 - math.floor(math.log10(margin)), 0), 10)
    return f"{cell.mean:.{decimals}f}", f"{margin:.{decimals}f}"


def p_text(p: float | None, below: str = "<0.001") -> str | None:
    if p is None:
        return None
    return below if p < 0.001 else f"{p:.3f}"


def _sample_range(comparison: Comparison) -> str:
    sizes = [c.n for row in comparison.rows for c in row.cells if c.n > 0]
    if not sizes:
        return "0"
    low, high = min(sizes), max(sizes)
    return f"{low:,}" if low == high else f"{low:,}\N{EN DASH}{high:,}"


def _level(comparison: Comparison) -> str:
    return f"{round(comparison.confidence_level * 100, 4):g}"


def _p_caption(comparison: Comparison) -> str:
    adjusted = (
        f", Holm-adjusted across the {len(comparison.rows) - 1} comparisons of each metric"
        if comparison.corrected
        else ""
    )
    return f"p-values of Welch's t-test of each experiment against the best one of each metric{adjusted}."


# -- LaTeX -----------------------------------------------------------------------------------


def _latex_cell(cell: ComparisonCell) -> str:
    parts = mean_and_margin(cell)
    if parts is None:
        return "---"
    mean, margin = parts
    math_text = f"${mean} \\pm {margin}$" if margin is not None else f"${mean}$"
    return f"{{\\boldmath{math_text}}}" if cell.best else math_text


# Names longer than this many characters wrap in a box of the given width, so that a long
# name makes its column taller rather than the table wider (numbers are about 6em wide).
HEADER_WRAP_ABOVE, HEADER_EM = 12, 6
NAME_WRAP_ABOVE, NAME_EM = 24, 12
CAPTION_WORD = 20  # the narrowest line a caption meets, a two-column page's, holds more


def _latex_name(name: str) -> str:
    """An experiment's name for the first column; a long one wraps, its first line on the row's.

    The struts give the box's first and last lines the height and depth of a plain row, so
    rows stay as far apart as unwrapped ones.
    """
    if _set_length(name) <= NAME_WRAP_ABOVE:
        return latex_escape(name)
    return f"\\parbox[t]{{{NAME_EM}em}}{{\\raggedright\\strut {latex_wrappable(name, NAME_EM)}\\strut}}"


def _latex_caption(caption: str) -> str:
    """A user's caption; one with a word wider than the line gets places to break it."""
    if max((_set_length(word) for word in caption.split()), default=0) <= CAPTION_WORD:
        return latex_escape(caption)
    return latex_wrappable(caption, CAPTION_WORD)


def _latex_header(comparison: Comparison, arrows: bool) -> str:
    names = []
    for metric, lower in zip(comparison.metrics, comparison.lower_is_better, strict=True):
        arrow = (r" $\downarrow$" if lower else r" $\uparrow$") if arrows else ""
        if _set_length(metric) <= HEADER_WRAP_ABOVE:
            names.append(latex_escape(metric) + arrow)
        else:  # its last line on the row's baseline, beside "Experiment"
            wrapped = f"\\centering\\strut {latex_wrappable(metric, HEADER_EM)}{arrow}\\strut"
            names.append(f"\\parbox[b]{{{HEADER_EM}em}}{{{wrapped}}}")
    return "Experiment & " + " & ".join(names) + r" \\"


def _latex_table(comparison: Comparison, caption: str, label: str, body: list[str], arrows: bool) -> list[str]:
    """A table float; the tabular is measured and, only when wider than the line, scaled to it.

    Measuring in TeX (a box register and graphicx's \resizebox) fits whatever the fonts, names
    and count of metrics, with no package beyond graphicx; narrower tables keep their size.
    """
    columns = "l" + "c" * len(comparison.metrics)
    return [
        r"\begin{table}[htbp]",
        r"\centering",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        r"\sbox0{%",
        f"\\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        _latex_header(comparison, arrows),
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}}%",
        r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi",
        r"\end{table}",
    ]


def render_latex(comparison: Comparison, template: str, caption: str | None, label: str) -> str:
    default_caption = (
        f"Comparison of {len(comparison.rows)} experiments: mean $\\pm$ half-width of the {_level(comparison)}\\,\\% "
        f"confidence interval (t-distribution), n = {_sample_range(comparison)} values per cell. "
        r"Best per metric in bold; $\uparrow$ higher is better, $\downarrow$ lower is better."
    )
    means = [
        _latex_name(row.name) + " & " + " & ".join(_latex_cell(c) for c in row.cells) + r" \\"
        for row in comparison.rows
    ]
    p_rows = [
        _latex_name(row.name)
        + " & "
        + " & ".join("best" if c.best else (p_text(c.p_value_vs_best, "$<0.001$") or "---") for c in row.cells)
        + r" \\"
        for row in comparison.rows
    ]
    tables = [
        *_latex_table(comparison, _latex_caption(caption) if caption else default_caption, label, means, True),
        "",
        *_latex_table(comparison, latex_escape(_p_caption(comparison)), f"{label}-p", p_rows, False),
    ]
    if template == "table":
        needs = r"% Needs \usepackage[T1]{fontenc}, \usepackage{booktabs} and \usepackage{graphicx}."
        return "\n".join([needs, *tables, ""])
    return "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage[T1]{fontenc}",
            r"\usepackage[utf8]{inputenc}",
            r"\usepackage{booktabs}",
            r"\usepackage{graphicx}",
            r"\begin{document}",
            *tables,
            r"\end{document}",
            "",
        ]
    )


# -- Markdown and HTML -----------------------------------------------------------------------


def _plain_cell(cell: ComparisonCell, bold: Callable[[str], str]) -> str:
    parts = mean_and_margin(cell)
    if parts is None:
        return "—"
    mean, margin = parts
    text = f"{mean} ± {margin}" if margin is not None else mean
    return (bold(text) if cell.best else text) + f" (n = {cell.n:,})"


def _description(comparison: Comparison) -> str:
    return (
        f"Mean ± half-width of the {_level(comparison)} % confidence interval (t-distribution); "
        "best per metric in bold; ↑ higher is better, ↓ lower is better."
    )


def _arrow(lower: bool) -> str:
    return "↓" if lower else "↑"


def render_markdown(comparison: Comparison, caption: str | None) -> str:
    def row_line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    header = ["Experiment"] + [
        f"{markdown_escape(m)} {_arrow(lower)}"
        for m, lower in zip(comparison.metrics, comparison.lower_is_better, strict=True)
    ]
    rule = ["---"] + ["---:"] * len(comparison.metrics)
    lines = [
        "## Comparison of experiments",
        "",
        markdown_escape(caption) if caption else _description(comparison),
        "",
        row_line(header),
        row_line(rule),
    ]
    for row in comparison.rows:
        name = f"{markdown_escape(row.name)} (`{row.experiment_id}`)"
        lines.append(row_line([name] + [_plain_cell(c, lambda t: f"**{t}**") for c in row.cells]))
    lines += [
        "",
        f"### {_p_caption(comparison).rstrip('.')}",
        "",
        row_line(["Experiment", *header[1:]]),
        row_line(rule),
    ]
    for row in comparison.rows:
        cells = ["best" if c.best else (p_text(c.p_value_vs_best) or "—") for c in row.cells]
        lines.append(row_line([markdown_escape(row.name), *cells]))
    return "\n".join(lines) + "\n"


def _html_table(caption: str, header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["<table>", f"<caption>{caption}</caption>", "<thead><tr>"]
    lines += [f"<th>{cell}</th>" for cell in header]
    lines += ["</tr></thead>", "<tbody>"]
    for row in rows:
        lines.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return [*lines, "</tbody>", "</table>"]


def render_html(comparison: Comparison, caption: str | None) -> str:
    header = ["Experiment"] + [
        f"{html_escape(m)} {_arrow(lower)}"
        for m, lower in zip(comparison.metrics, comparison.lower_is_better, strict=True)
    ]
    means = [
        [html_escape(row.name)] + [_plain_cell(c, lambda t: f"<strong>{t}</strong>") for c in row.cells]
        for row in comparison.rows
    ]
    p_rows = [
        [html_escape(row.name)]
        + ["best" if c.best else html_escape(p_text(c.p_value_vs_best) or "—") for c in row.cells]
        for row in comparison.rows
    ]
    style = (
        "table{border-collapse:collapse;margin:1em 0}caption{caption-side:top;text-align:left;padding:.4em 0}"
        "thead{border-top:2px solid;border-bottom:1px solid}tbody{border-bottom:2px solid}"
        "th,td{padding:.25em .75em;text-align:right}th:first-child,td:first-child{text-align:left}"
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8"><title>Comparison of experiments</title>',
            f"<style>{style}</style></head>",
            "<body>",
            *_html_table(html_escape(caption) if caption else _description(comparison), header, means),
            *_html_table(html_escape(_p_caption(comparison)), ["Experiment", *header[1:]], p_rows),
            "</body>",
            "</html>",
            "",
        ]
    )


# -- CSV -------------------------------------------------------------------------------------

CSV_COLUMNS = [
    "experiment_id",
    "experiment_name",
    "metric",
    "lower_is_better",
    "n",
    "mean",
    "std_dev",
    "ci_low",
    "ci_high",
    "confidence_level",
    "best",
    "p_value_vs_best",
]


def render_csv(comparison: Comparison) -> str:
    """One row per experiment and metric; numbers at full precision, empty when undefined."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in comparison.rows:
        for metric, lower, cell in zip(comparison.metrics, comparison.lower_is_better, row.cells, strict=True):
            numbers = [cell.mean, cell.std_dev, cell.ci_low, cell.ci_high]
            writer.writerow(
                [
                    row.experiment_id,
                    spreadsheet_safe(row.name),
                    spreadsheet_safe(metric),
                    str(lower).lower(),
                    cell.n,
                    *("" if v is None else repr(v) for v in numbers),
                    comparison.confidence_level,
                    str(cell.best).lower(),
                    "" if cell.p_value_vs_best is None else repr(cell.p_value_vs_best),
                ]
            )
    return out.getvalue()


def render(comparison: Comparison, format: str, template: str, caption: str | None, label: str) -> Rendered:
    """The report in `format`, with its media type and a file name."""
    if format == "latex":
        return Rendered(render_latex(comparison, template, caption, label), "application/x-latex", "comparison.tex")
    if format == "markdown":
        return Rendered(render_markdown(comparison, caption), "text/markdown; charset=utf-8", "comparison.md")
    if format == "html":
        return Rendered(render_html(comparison, caption), "text/html; charset=utf-8", "comparison.html")
    return Rendered(render_csv(comparison), "text/csv; charset=utf-8", "comparison.csv")
