"""Assumption checks reported with a test: Shapiro-Wilk per group, Levene across groups, expected counts.

When a parametric test's assumptions fail, the check names the test to use instead.
Pure functions over numpy arrays; every test statistic comes from scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from service.core.lazy_modules import lazy

if TYPE_CHECKING:
    from scipy import stats
else:
    stats = lazy("scipy.stats")

from schemas.statistics import AssumptionChecks, ExpectedCounts, NormalityCheck, StatisticalOptions, VarianceCheck
from service.statistics.tests import Group, constant, finite, matched

# Shapiro-Wilk's p-value is accurate up to 5,000 values, and on more it flags departures
# too small to matter: larger groups are checked on a seeded random subsample.
SHAPIRO_MAX = 5_000
SUBSAMPLE_SEED = 20_240_115
LARGE_SAMPLE = 5_000

PARAMETRIC = frozenset({"two_sample_t_test", "welch_t_test", "paired_t_test", "one_sample_t_test", "one_way_anova"})
PAIRED = frozenset({"paired_t_test", "wilcoxon_signed_rank"})
INDEPENDENT_GROUPS = frozenset(
    {"two_sample_t_test", "welch_t_test", "mann_whitney_u", "one_way_anova", "kruskal_wallis"}
)
# What to run when normality fails, for each parametric test.
NONPARAMETRIC_ALTERNATIVE = {
    "two_sample_t_test": "mann_whitney_u",
    "welch_t_test": "mann_whitney_u",
    "paired_t_test": "wilcoxon_signed_rank",
    "one_sample_t_test": "wilcoxon_signed_rank",
    "one_way_anova": "kruskal_wallis",
}


def shapiro_wilk(name: str, values: np.ndarray, alpha: float) -> NormalityCheck:
    """Normal when p ≥ alpha; not checked below 3 values or when every value is the same."""
    n = int(values.size)
    if n < 3 or constant(values):
        return NormalityCheck(group=name, n=n)
    tested = values
    if n > SHAPIRO_MAX:
        tested = np.random.default_rng(SUBSAMPLE_SEED).choice(values, SHAPIRO_MAX, replace=False)
    result = stats.shapiro(tested)
    p = finite(result.pvalue)
    return NormalityCheck(
        group=name,
        n=n,
        n_tested=int(tested.size),
        statistic=finite(result.statistic),
        p_value=p,
        passed=None if p is None else p >= alpha,
    )


def levene(groups: list[Group], alpha: float) -> VarianceCheck:
    """Levene's test centred on the median (Brown-Forsythe), scipy's default."""
    samples = [g.values for g in groups]
    if any(s.size < 2 for s in samples) or constant(*samples):
        return VarianceCheck()
    result = stats.levene(*samples)
    p = finite(result.pvalue)
    return VarianceCheck(statistic=finite(result.statistic), p_value=p, passed=None if p is None else p >= alpha)


def normality_targets(test_type: str, groups: list[Group], options: StatisticalOptions) -> list[tuple[str, np.ndarray]]:
    """What must look normal: paired tests' differences, one-sample tests' group, else each group."""
    if test_type in PAIRED and len(groups) >= 2:
        assert options.pair_by is not None
        targets = []
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                x, y = matched(a, b, options.pair_by)
                targets.append((f"{a.name} - {b.name}", x - y))
        return targets
    if len(groups) == 1 and options.mu is not None:
        return [(groups[0].name, groups[0].values - options.mu)]
    return [(g.name, g.values) for g in groups]


def check_assumptions(test_type: str, groups: list[Group], options: StatisticalOptions) -> AssumptionChecks:
    """Normality and equal variances for a test on numbers, and the test to use when they fail."""
    alpha = options.alpha
    normality = [shapiro_wilk(name, values, alpha) for name, values in normality_targets(test_type, groups, options)]
    variance = levene(groups, alpha) if test_type in INDEPENDENT_GROUPS and len(groups) >= 2 else None
    if test_type not in PARAMETRIC:
        return AssumptionChecks(normality=normality, equal_variance=variance)
    normal = all(check.passed is not False for check in normality)
    equal = variance is None or variance.passed is not False
    # Welch's test does not assume equal variances: Levene is reported for it, not required.
    satisfied = normal and (equal or test_type == "welch_t_test")
    notes: list[str] = []
    recommended = None
    if not normal:
        recommended = NONPARAMETRIC_ALTERNATIVE[test_type]
        failed = [check.group for check in normality if check.passed is False]
        notes.append(f"Shapiro-Wilk rejects normality (p < {alpha:g}) for: {', '.join(failed)}.")
        if all(check.n >= LARGE_SAMPLE for check in normality):
            notes.append(
                "With samples this large the t-statistic is close to normal anyway (central limit theorem), "
                "and Shapiro-Wilk flags departures too small to matter: the parametric result is usually still sound."
            )
    elif not satisfied:
        notes.append(f"Levene's test rejects equal variances (p < {alpha:g}).")
        if test_type == "two_sample_t_test":
            recommended = "welch_t_test"
        else:
            recommended = "kruskal_wallis"
            notes.append("Welch's ANOVA is the usual remedy for unequal variances; it is not offered here.")
    return AssumptionChecks(
        normality=normality, equal_variance=variance, satisfied=satisfied, recommended_test=recommended, notes=notes
    )


def check_expected_counts(expected: np.ndarray, two_by_two: bool) -> AssumptionChecks:
    """Chi-square's approximation wants every expected count ≥ 5; else Fisher's exact test (2x2)."""
    below = int((expected < 5).sum())
    counts = ExpectedCounts(minimum=float(expected.min()), cells_below_5=below, passed=below == 0)
    notes = []
    recommended = None
    if below:
        notes.append(f"{below} of {expected.size} expected counts are below 5: the χ² p-value may be inaccurate.")
        if two_by_two:
            recommended = "fisher_exact"
        else:
            notes.append("Merge sparse categories or collect more samples.")
    return AssumptionChecks(expected_counts=counts, satisfied=below == 0, recommended_test=recommended, notes=notes)
