"""Statistical tests of an experiment's groups: which tests exist, the options each takes, the outcome.

`resolve_options` checks a request's options against its test before any data is
read; `run_test` runs the test on the groups' samples and returns everything the
API shows: the test's numbers, every pair's when more than two groups meet a
two-group test (p-values corrected, Holm by default), assumption checks and an
interpretation. Pure functions, no I/O; `StatisticsError` names what to change.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.core.lazy_modules import lazy

if TYPE_CHECKING:
    from scipy import stats
else:
    stats = lazy("scipy.stats")

from schemas.statistics import (
    MAX_GROUPS,
    Contingency,
    PairwiseComparison,
    StatisticalOptions,
    StatisticalOutcome,
)
from service.statistics import tests
from service.statistics.assumptions import check_assumptions, check_expected_counts
from service.statistics.interpretation import interpret
from service.statistics.tests import Finding, Group, StatisticsError, finite

COMMON_OPTIONS = frozenset({"alpha", "alternative", "group_by"})
GROUP_COLUMNS = ("model", "run_id", "event_name")
MEAN_EFFECTS = ("cohens_d", "hedges_g", "glass_delta")
PAIRED_EFFECTS = ("cohens_d", "hedges_g")
# How a rank test's p-value is computed; resamples and seed serve method permutation only.
RANK_OPTIONS = frozenset({"method", "continuity_correction", "resamples", "seed"})
RANK_TESTS = frozenset({"mann_whitney_u", "wilcoxon_signed_rank"})


@dataclass(frozen=True, slots=True)
class Procedure:
    """One test type: how it runs and what it accepts."""

    method: str
    statistic_name: str
    two_group: tests.TwoGroupTest | None = None  # run on each pair of groups
    one_group: tests.OneGroupTest | None = None  # run on a single group against mu
    omnibus: tests.OmnibusTest | None = None  # run on all groups at once
    options: frozenset[str] = frozenset()  # beyond alpha, alternative and group_by
    required: frozenset[str] = frozenset()
    effect_sizes: tuple[str, ...] = ()  # the first is the default
    one_sided: bool = True  # alternative may be less or greater
    numeric: bool = True  # samples are values of the metric (else counts of a category)
    max_groups: int = MAX_GROUPS
    labels: str | None = None  # the option naming the metadata key fetched with each sample


PROCEDURES: dict[str, Procedure] = {
    "two_sample_t_test": Procedure(
        "Student's two-sample t-test (pooled variance)",
        "t",
        two_group=tests.student_t_test,
        options=frozenset({"effect_size", "correction"}),
        effect_sizes=MEAN_EFFECTS,
    ),
    "welch_t_test": Procedure(
        "Welch's two-sample t-test (unequal variances)",
        "t",
        two_group=tests.welch_t_test,
        options=frozenset({"effect_size", "correction"}),
        effect_sizes=MEAN_EFFECTS,
    ),
    "paired_t_test": Procedure(
        "Paired t-test",
        "t",
        two_group=tests.paired_t_test,
        options=frozenset({"pair_by", "effect_size", "correction"}),
        required=frozenset({"pair_by"}),
        effect_sizes=PAIRED_EFFECTS,
        labels="pair_by",
    ),
    "one_sample_t_test": Procedure(
        "One-sample t-test",
        "t",
        one_group=tests.one_sample_t_test,
        options=frozenset({"mu", "effect_size"}),
        required=frozenset({"mu"}),
        effect_sizes=PAIRED_EFFECTS,
        max_groups=1,
    ),
    "mann_whitney_u": Procedure(
        "Mann-Whitney U test",
        "U",
        two_group=tests.mann_whitney_u,
        options=frozenset({"correction"}) | RANK_OPTIONS,
        effect_sizes=("rank_biserial",),
    ),
    "wilcoxon_signed_rank": Procedure(
        "Wilcoxon signed-rank test",
        "T_plus",
        two_group=tests.wilcoxon_signed_rank,
        one_group=tests.one_sample_wilcoxon,
        options=frozenset({"pair_by", "mu", "correction"}) | RANK_OPTIONS,
        effect_sizes=("rank_biserial",),
        labels="pair_by",
    ),
    "one_way_anova": Procedure(
        "One-way ANOVA",
        "F",
        omnibus=tests.one_way_anova,
        options=frozenset({"effect_size"}),
        effect_sizes=("eta_squared", "omega_squared"),
        one_sided=False,
    ),
    "kruskal_wallis": Procedure(
        "Kruskal-Wallis H test",
        "H",
        omnibus=tests.kruskal_wallis,
        effect_sizes=("eta_squared",),
        one_sided=False,
    ),
    "chi_square": Procedure(
        "Pearson's chi-square test of independence",
        "chi_square",
        omnibus=tests.chi_square,
        options=frozenset({"category", "continuity_correction"}),
        required=frozenset({"category"}),
        effect_sizes=("cramers_v",),
        one_sided=False,
        numeric=False,
        labels="category",
    ),
    "fisher_exact": Procedure(
        "Fisher's exact test",
        "sample_odds_ratio",
        two_group=tests.fisher_exact,
        options=frozenset({"category", "correction"}),
        required=frozenset({"category"}),
        effect_sizes=("cramers_v",),
        numeric=False,
        labels="category",
    ),
    "bootstrap": Procedure(
        "Bootstrap confidence interval (scipy.stats.bootstrap)",
        "mean_difference",
        two_group=tests.bootstrap,
        options=frozenset({"resamples", "seed", "statistic", "bootstrap_method", "effect_size"}),
        effect_sizes=MEAN_EFFECTS,
        max_groups=2,
    ),
}

# What `method` adds for the p-value, in the words of R's htest methods.
METHOD_NOTES = {
    ("exact", False): ", exact p-value",
    ("asymptotic", True): ", normal approximation with continuity correction",
    ("asymptotic", False): ", normal approximation",
    ("permutation", False): ", permutation p-value over every rearrangement",
    ("monte_carlo_permutation", False): ", Monte Carlo permutation p-value",
}

OPTION_PURPOSE = {
    "pair_by": "the metadata key that matches samples across groups (such as sample_id)",
    "mu": "the value the group is tested against",
    "category": "the metadata key whose values are counted",
}


def resolve_options(test_type: str, given: Mapping[str, Any]) -> StatisticalOptions:
    """The options of a test with defaults filled in; refuses options that do not apply to it.

    A bootstrap without a seed gets one drawn here, so the recorded result can be reproduced."""
    procedure = PROCEDURES[test_type]
    accepted = COMMON_OPTIONS | procedure.options
    for name in given:
        if name not in accepted:
            takes = ", ".join(sorted(accepted))
            raise StatisticsError(f"options.{name}", f"does not apply to {test_type}; it takes {takes}")
    for name in sorted(procedure.required - set(given)):
        raise StatisticsError(f"options.{name}", f"is required for {test_type}: {OPTION_PURPOSE[name]}")
    values = dict(given)
    if values.get("alternative", "two_sided") != "two_sided" and not procedure.one_sided:
        raise StatisticsError("options.alternative", f"must be two_sided for {test_type}: it has no direction")
    group_by = values.get("group_by", "model")
    if group_by.removeprefix("metadata.") == "experiment_id" or group_by == "metadata.":
        raise StatisticsError(
            "options.group_by", "cannot be experiment_id: a test compares groups within one experiment"
        )
    effects = procedure.effect_sizes
    if test_type == "bootstrap" and values.get("statistic") == "median":
        effects = ("rank_biserial",)
    effect = values.setdefault("effect_size", effects[0])
    if effect not in effects:
        raise StatisticsError("options.effect_size", f"{test_type} reports {', '.join(effects)}, not {effect}")
    if test_type in RANK_TESTS:
        _check_rank_options(test_type, given)
    if (test_type == "bootstrap" or values.get("method") == "permutation") and values.get("seed") is None:
        values["seed"] = secrets.randbits(32)
    return StatisticalOptions(**values)


def _check_rank_options(test_type: str, given: Mapping[str, Any]) -> None:
    """Options of a rank test that the chosen method would silently ignore are refused."""
    method = given.get("method", "auto")
    for name in ("resamples", "seed"):
        if name in given and method != "permutation":
            raise StatisticsError(f"options.{name}", f"applies to {test_type} with method permutation only")
    if "continuity_correction" in given and method in ("exact", "permutation"):
        raise StatisticsError(
            "options.continuity_correction",
            f"applies to the normal approximation (method asymptotic or auto), not to method {method}",
        )


def group_source(group_by: str) -> tuple[str, str]:
    """(column, metadata key) a group comes from: a column of GROUP_COLUMNS, else a metadata key."""
    if group_by in GROUP_COLUMNS:
        return group_by, ""
    return "model", group_by.removeprefix("metadata.")


def label_key(test_type: str, options: StatisticalOptions) -> str:
    """The metadata key fetched with each sample (pair key or category), or ''."""
    name = PROCEDURES[test_type].labels
    value = getattr(options, name) if name else None
    return value or ""


def min_samples(test_type: str) -> int:
    return 1 if not PROCEDURES[test_type].numeric else 2


def check_groups(test_type: str, groups: Sequence[Group], options: StatisticalOptions, metric: str | None) -> None:
    """Refuse group counts and sample sizes the test cannot use, and options that depend on them."""
    procedure = PROCEDURES[test_type]
    count = len(groups)
    names = tests.examples([g.name for g in groups])
    if procedure.one_group is not None and procedure.two_group is None and count != 1:
        raise StatisticsError(
            "groups", f"{test_type} tests exactly one group; found {count} ({names}): name one in groups"
        )
    if procedure.one_group is None and count < 2:
        raise StatisticsError("groups", f"{test_type} compares at least 2 groups; found {count} ({names or 'none'})")
    if count > procedure.max_groups:
        raise StatisticsError(
            "groups", f"{test_type} compares at most {procedure.max_groups} groups; found {count} ({names})"
        )
    if test_type == "wilcoxon_signed_rank":
        if count == 1 and options.mu is None:
            raise StatisticsError(
                "options.mu", "is required for wilcoxon_signed_rank on one group: the value tested against"
            )
        if count > 1 and options.pair_by is None:
            raise StatisticsError(
                "options.pair_by", f"is required for wilcoxon_signed_rank on 2 groups: {OPTION_PURPOSE['pair_by']}"
            )
        if count > 1 and options.mu is not None:
            raise StatisticsError("options.mu", "applies to wilcoxon_signed_rank on one group only")
    least = min_samples(test_type)
    for group in groups:
        n = group.values.size if procedure.numeric else len(group.labels)
        if n < least:
            what = f"values of {metric}" if procedure.numeric else f"samples with {options.category}"
            raise StatisticsError(
                "groups", f"group {group.name!r} has {n} {what}; {test_type} needs at least {least} per group"
            )


def adjust_p_values(p_values: Sequence[float], method: str) -> list[float]:
    """Holm's step-down (family-wise error), Benjamini-Hochberg (scipy's false discovery control) or none."""
    p = np.asarray(p_values, dtype=float)
    if method == "none" or p.size == 0:
        return p.tolist()
    if method == "benjamini_hochberg":
        return [float(v) for v in stats.false_discovery_control(p, method="bh")]
    order = np.argsort(p, kind="stable")
    scaled = (p.size - np.arange(p.size)) * p[order]  # m·p(1), (m-1)·p(2), ...
    adjusted = np.empty(p.size)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted.tolist()


def summaries(groups: Sequence[Group], numeric: bool) -> dict[str, Any]:
    """sample_sizes, means, std_devs (n - 1) and medians of each group."""
    if not numeric:
        return {"sample_sizes": [len(g.labels) for g in groups]}
    return {
        "sample_sizes": [int(g.values.size) for g in groups],
        "means": [finite(np.mean(g.values)) for g in groups],
        "std_devs": [finite(np.std(g.values, ddof=1)) if g.values.size > 1 else None for g in groups],
        "medians": [finite(np.median(g.values)) for g in groups],
    }


def excludes_zero(interval: Sequence[float | None] | None, alternative: str) -> bool:
    """Whether a bootstrap interval lies wholly on one side of 0 (one-sided: the named side)."""
    if interval is None:
        return False
    low, high = interval
    if alternative == "greater":
        return low is not None and low > 0
    if alternative == "less":
        return high is not None and high < 0
    return (low is not None and low > 0) or (high is not None and high < 0)


def run_test(
    test_type: str, metric: str | None, groups: list[Group], options: StatisticalOptions
) -> StatisticalOutcome:
    """Run `test_type` on the groups' samples; the outcome the API records and shows."""
    procedure = PROCEDURES[test_type]
    check_groups(test_type, groups, options, metric)
    effect = options.effect_size or procedure.effect_sizes[0]
    outcome = StatisticalOutcome(
        test_type=test_type,
        method=procedure.method,
        statistic_name=f"{options.statistic}_difference" if test_type == "bootstrap" else procedure.statistic_name,
        metric=metric,
        group_by=options.group_by,
        groups=[g.name for g in groups],
        effect_size_type=effect,
        confidence_level=1 - options.alpha,
        alternative=options.alternative,
        alpha=options.alpha,
        mu=options.mu if len(groups) == 1 else None,
        category=None if procedure.numeric else options.category,
        **summaries(groups, procedure.numeric),
    )
    if len(groups) == 1:
        assert procedure.one_group is not None
        _take(outcome, procedure.one_group(groups[0], options, effect))
    elif procedure.omnibus is not None:
        _take(outcome, procedure.omnibus(groups, options, effect))
    else:
        _compare_pairs(outcome, procedure, groups, options, effect)
    v_df = 1
    if not procedure.numeric:
        categories, table = tests.contingency_table(groups)
        outcome.contingency = Contingency(categories=categories, counts=table.tolist())
        v_df = max(min(table.shape) - 1, 1)
        if test_type == "chi_square":
            expected = stats.contingency.expected_freq(table)
            outcome.assumptions = check_expected_counts(expected, table.shape == (2, 2))
    elif test_type != "bootstrap":
        outcome.assumptions = check_assumptions(test_type, groups, options)
    if test_type in RANK_TESTS:
        outcome.method += METHOD_NOTES[(outcome.p_value_method or "", bool(outcome.continuity_correction))]
    elif outcome.continuity_correction:
        outcome.method += " with Yates' continuity correction"
    if test_type == "bootstrap":
        significant = excludes_zero(outcome.confidence_interval, options.alternative)
    else:
        significant = outcome.p_value is not None and outcome.p_value < options.alpha
    outcome.interpretation = interpret(outcome, significant, v_df)
    return outcome


def _take(outcome: StatisticalOutcome, finding: Finding) -> None:
    outcome.statistic = finding.statistic
    outcome.p_value = finding.p_value
    outcome.p_value_method = finding.p_value_method
    outcome.continuity_correction = finding.continuity_correction
    outcome.effect_size = finding.effect_size
    outcome.degrees_of_freedom = finding.degrees_of_freedom
    outcome.estimate = finding.estimate
    outcome.confidence_interval = list(finding.interval) if finding.interval is not None else None
    outcome.confidence_interval_of = finding.interval_of


def _compare_pairs(
    outcome: StatisticalOutcome, procedure: Procedure, groups: list[Group], options: StatisticalOptions, effect: str
) -> None:
    """Test every pair; beyond two groups correct the p-values and report the most significant pair."""
    assert procedure.two_group is not None
    pairs = list(itertools.combinations(groups, 2))
    with tests.pairs_share_the_limits(len(pairs)):
        findings = [procedure.two_group(a, b, options, effect) for a, b in pairs]
    if len(pairs) == 1:
        _take(outcome, findings[0])
        return
    raw = [1.0 if f.p_value is None else f.p_value for f in findings]
    adjusted = adjust_p_values(raw, options.correction)
    outcome.correction = options.correction
    outcome.pairwise = [
        PairwiseComparison(
            groups=[a.name, b.name],
            statistic=f.statistic,
            degrees_of_freedom=f.degrees_of_freedom if isinstance(f.degrees_of_freedom, float) else None,
            p_value=f.p_value,
            adjusted_p_value=finite(p),
            effect_size=f.effect_size,
            confidence_interval=list(f.interval) if f.interval is not None else None,
            significant=p < options.alpha,
            estimate=f.estimate,
            p_value_method=f.p_value_method,
            continuity_correction=f.continuity_correction,
        )
        for (a, b), f, p in zip(pairs, findings, adjusted, strict=True)
    ]
    best = min(range(len(pairs)), key=lambda i: (adjusted[i], -abs(findings[i].effect_size or 0.0)))
    _take(outcome, findings[best])
    outcome.p_value = finite(adjusted[best])
    outcome.pair = [pairs[best][0].name, pairs[best][1].name]


# -- summaries of a comparison report ---------------------------------------------------------------


def mean_interval(n: int, mean: float, sd: float | None, level: float) -> tuple[float | None, float | None]:
    """The t-based interval of a mean: mean ± t((1 + level) / 2, n - 1) · sd / √n; none below 2 values."""
    if n < 2 or sd is None:
        return None, None
    if sd == 0:
        return mean, mean
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=sd / np.sqrt(n))
    return finite(low), finite(high)


def welch_p_value(first: tuple[int, float, float | None], second: tuple[int, float, float | None]) -> float | None:
    """Welch's two-sided t-test from (n, mean, sd) summaries; none when either lacks a variance."""
    (n1, mean1, sd1), (n2, mean2, sd2) = first, second
    if n1 < 2 or n2 < 2 or sd1 is None or sd2 is None or (sd1 == 0 and sd2 == 0):
        return None
    return finite(stats.ttest_ind_from_stats(mean1, sd1, n1, mean2, sd2, n2, equal_var=False).pvalue)
