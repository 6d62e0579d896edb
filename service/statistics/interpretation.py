"""What a result means in words: significance, the effect's size by Cohen's conventions, a sentence."""

from __future__ import annotations

import math
from typing import Literal

from schemas.statistics import Interpretation, StatisticalOutcome

Magnitude = Literal["negligible", "small", "medium", "large"]

# Cohen (1988): the smallest |value| that is small, medium, large.
COHEN_THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "cohens_d": (0.2, 0.5, 0.8),
    "hedges_g": (0.2, 0.5, 0.8),
    "glass_delta": (0.2, 0.5, 0.8),
    "rank_biserial": (0.1, 0.3, 0.5),
    "eta_squared": (0.01, 0.06, 0.14),
    "omega_squared": (0.01, 0.06, 0.14),
    "cramers_v": (0.1, 0.3, 0.5),  # Cohen's w, divided by sqrt(min(rows, columns) - 1) for V
}
EFFECT_LABELS = {
    "cohens_d": "Cohen's d",
    "hedges_g": "Hedges' g",
    "glass_delta": "Glass's Δ",
    "rank_biserial": "rank-biserial r",
    "eta_squared": "η²",
    "omega_squared": "ω²",
    "cramers_v": "Cramér's V",
}
OMNIBUS = frozenset({"one_way_anova", "kruskal_wallis", "chi_square"})
SMALL_SAMPLE = 30
ADJUSTMENTS = {"holm": "Holm-adjusted", "benjamini_hochberg": "Benjamini-Hochberg-adjusted", "none": "unadjusted"}


def magnitude(kind: str | None, value: float | None, v_df: int = 1) -> Magnitude | None:
    """Negligible, small, medium or large by Cohen's conventions; `v_df` = min(rows, columns) - 1 for V."""
    if kind is None or value is None or kind not in COHEN_THRESHOLDS:
        return None
    small, medium, large = COHEN_THRESHOLDS[kind]
    if kind == "cramers_v":
        scale = math.sqrt(max(v_df, 1))
        small, medium, large = small / scale, medium / scale, large / scale
    size = abs(value)
    if size >= large:
        return "large"
    if size >= medium:
        return "medium"
    if size >= small:
        return "small"
    return "negligible"


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def p_text(p: float | None) -> str:
    if p is None:
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def interpret(outcome: StatisticalOutcome, significant: bool, v_df: int = 1) -> Interpretation:
    """Significance at the outcome's alpha, the effect's magnitude, and one plain sentence."""
    size = magnitude(outcome.effect_size_type, outcome.effect_size, v_df)
    return Interpretation(
        significance="significant" if significant else "not_significant",
        effect_magnitude=size,
        practical_significance=_sentence(outcome, significant, size),
    )


def _effect(outcome: StatisticalOutcome, size: Magnitude | None) -> str:
    label = EFFECT_LABELS.get(outcome.effect_size_type or "", outcome.effect_size_type or "effect")
    return f"{size or 'unknown'} effect ({label} = {number(outcome.effect_size)})"


def _practical(significant: bool, size: Magnitude | None, smallest_n: int) -> str:
    if significant and size in ("medium", "large"):
        return "likely to matter in practice"
    if significant and size == "small":
        return "real but small: check whether it matters in practice"
    if significant:
        return "statistically detectable but too small to matter in practice"
    if size in ("medium", "large") and smallest_n < SMALL_SAMPLE:
        return "not significant, though the effect is sizeable: the samples may be too small to detect it"
    return "no evidence of a difference that matters"


def _sentence(outcome: StatisticalOutcome, significant: bool, size: Magnitude | None) -> str:
    metric = outcome.metric or "the outcome"
    smallest_n = min(outcome.sample_sizes, default=0)
    tail = f"{_effect(outcome, size)}; {_practical(significant, size, smallest_n)}."
    if outcome.contingency is not None:
        return _category_sentence(outcome, significant, tail)
    if outcome.test_type in OMNIBUS:
        centre = "mean" if outcome.test_type == "one_way_anova" else "median"
        values = outcome.means if centre == "mean" else outcome.medians
        present = [-math.inf if v is None else v for v in values]
        best = present.index(max(present))
        verdict = "differs significantly" if significant else "does not differ significantly"
        return (
            f"{metric.capitalize()} {verdict} among the {len(outcome.groups)} groups ({p_text(outcome.p_value)}); "
            f"highest {centre}: {outcome.groups[best]} ({number(values[best])}); a {tail}"
        )
    if len(outcome.groups) == 1:
        return _one_sample_sentence(outcome, significant, metric, tail)
    return _pair_sentence(outcome, significant, metric, tail)


def _category_sentence(outcome: StatisticalOutcome, significant: bool, tail: str) -> str:
    verdict = "differs significantly" if significant else "does not differ significantly"
    among = f"among the {len(outcome.groups)} groups"
    evidence = p_text(outcome.p_value)
    if outcome.test_type == "fisher_exact":
        first, second = outcome.pair or outcome.groups[:2]
        among = f"between {first} and {second}"
        if outcome.estimate is not None:
            # The conditional estimate belongs with the interval; results recorded before it had neither.
            level = round(outcome.confidence_level * 100, 4)
            evidence += f", conditional odds ratio {number(outcome.estimate)}, {level:g} % CI {_interval(outcome)}"
        else:
            evidence += f", odds ratio {number(outcome.statistic)}"
    return f"The distribution of {outcome.category or 'categories'} {verdict} {among} ({evidence}), a {tail}"


def _one_sample_sentence(outcome: StatisticalOutcome, significant: bool, metric: str, tail: str) -> str:
    centre = "median" if outcome.test_type == "wilcoxon_signed_rank" else "mean"
    value = (outcome.medians if centre == "median" else outcome.means or [None])[0]
    verdict = "differs significantly" if significant else "does not differ significantly"
    return (
        f"The {centre} {metric} of {outcome.groups[0]} ({number(value)}) {verdict} from {number(outcome.mu)} "
        f"({p_text(outcome.p_value)}), a {tail}"
    )


def _pair_sentence(outcome: StatisticalOutcome, significant: bool, metric: str, tail: str) -> str:
    first, second = outcome.pair or outcome.groups[:2]
    i, j = outcome.groups.index(first), outcome.groups.index(second)
    use_median = outcome.test_type in ("mann_whitney_u", "wilcoxon_signed_rank") or (
        outcome.confidence_interval_of == "median_difference"
    )
    centre = "median" if use_median else "mean"
    values = outcome.medians if use_median else outcome.means
    a, b = values[i], values[j]
    direction = "higher" if a is not None and b is not None and a > b else "lower"
    evidence = p_text(outcome.p_value)
    if outcome.test_type == "bootstrap":
        evidence = f"{round(outcome.confidence_level * 100, 4):g} % CI {_interval(outcome)}"
    family = ""
    if outcome.correction is not None:
        tested = sum(1 for c in outcome.pairwise if c.significant)
        adjusted = ADJUSTMENTS.get(outcome.correction, outcome.correction)
        family = f"; {tested} of {len(outcome.pairwise)} pairs differ significantly ({adjusted} p-values)"
    if significant:
        return (
            f"{first} has a significantly {direction} {centre} {metric} than {second} "
            f"({number(a)} vs {number(b)}, {evidence}){family}, a {tail}"
        )
    return (
        f"No significant difference in {centre} {metric} between {first} and {second} "
        f"({number(a)} vs {number(b)}, {evidence}){family}, a {tail}"
    )


def _interval(outcome: StatisticalOutcome) -> str:
    low, high = outcome.confidence_interval or (None, None)
    return f"{number(low)} to {number(high)}"
