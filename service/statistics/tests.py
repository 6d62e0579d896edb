"""Each statistical test on numpy arrays: scipy.stats for the test, textbook formulas for effect sizes.

Pure functions, no I/O. A two-group test returns a `Finding` for the pair (first
group minus second), a one-sample test for its group against `mu`, an omnibus test
for all groups. Data a test cannot use (no variance, nothing to rank, unmatched
pairs) raises `StatisticsError` with a sentence saying why, which the API answers
as 422. Every distribution and every test statistic comes from scipy (Wilcoxon's T+ is
summed from scipy's ranks, as scipy reports min(T+, T-) when two-sided). Where scipy's
defaults differ from R's (rank tests' p-value method and continuity correction, Fisher's
odds ratio), the tests ask scipy for R's: README.md "Statistics: defaults and estimands".
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from service.core.lazy_modules import lazy

if TYPE_CHECKING:
    from scipy import special, stats
else:
    special = lazy("scipy.special")
    stats = lazy("scipy.stats")

from schemas.statistics import StatisticalOptions

SCIPY_ALTERNATIVE = {"two_sided": "two-sided", "less": "less", "greater": "greater"}
# Larger bootstraps take many seconds of a shared CPU: refused with a way out instead.
BOOTSTRAP_WORK_LIMIT = 200_000_000  # values resampled: (n1 + n2) x resamples
BCA_JACKKNIFE_LIMIT = 10_000_000  # n1² + n2²: BCa's jackknife recomputes the statistic n times per group
# R's wilcox.test computes exact p-values below 50 values (per group, or non-zero differences).
EXACT_BELOW = 50
# Exact null distributions asked for explicitly: scipy's Mann-Whitney recursion takes ~0.03 s at
# 100 x 100 and ~3 s at 200 x 200; the signed-rank one ~0.15 s at 500 and ~2 s at 1,000 values.
EXACT_MANN_WHITNEY_LIMIT = 10_000  # n1 x n2
EXACT_SIGNED_RANK_LIMIT = 500  # non-zero differences
# Permutation p-values re-rank every rearrangement: ~1.2M ranked values/s for Mann-Whitney.
PERMUTATION_WORK_LIMIT = 5_000_000  # values x resamples
SHOWN_EXAMPLES = 5

# The work limits above bound a request, not a pair of groups: a comparison of k groups
# tests k(k-1)/2 pairs (190 for 20 groups), each given its share of every limit.
_pairs_in_request: contextvars.ContextVar[int] = contextvars.ContextVar("pairs_in_request", default=1)


@contextlib.contextmanager
def pairs_share_the_limits(pairs: int) -> Iterator[None]:
    """Within the block, each pair's work limits are the request's divided by `pairs`."""
    token = _pairs_in_request.set(max(pairs, 1))
    try:
        yield
    finally:
        _pairs_in_request.reset(token)


def work_limit(limit: int) -> int:
    """`limit` as it holds for one pair of the request being computed."""
    return max(limit // _pairs_in_request.get(), 1)


def _of_request() -> str:
    pairs = _pairs_in_request.get()
    return "" if pairs == 1 else f" (a request's limit shared by its {pairs} pairs)"


class StatisticsError(ValueError):
    """The data or options cannot give this test; `field` names what to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Group:
    """One group's samples; `labels` are each sample's pair key or category, when asked for."""

    name: str
    values: np.ndarray
    labels: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    """What one test says: the statistic, its p-value, an effect size and an interval.

    `estimate` is the point estimate of what `interval_of` names; `p_value_method` and
    `continuity_correction` say how the p-value was computed (None: the test has no choice)."""

    statistic: float | None
    p_value: float | None
    effect_size: float | None = None
    degrees_of_freedom: float | list[float] | None = None
    interval: tuple[float | None, float | None] | None = None
    interval_of: str | None = None
    estimate: float | None = None
    p_value_method: str | None = None
    continuity_correction: bool | None = None


TwoGroupTest = Callable[[Group, Group, StatisticalOptions, str], Finding]
OneGroupTest = Callable[[Group, StatisticalOptions, str], Finding]
OmnibusTest = Callable[[list[Group], StatisticalOptions, str], Finding]


def finite(value: float | np.floating | None) -> float | None:
    """A float for JSON: None for a missing, infinite or undefined value."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def describe(values: np.ndarray) -> str:
    """How a constant sample reads in a message."""
    return f"every value is {values[0]:.6g}" if values.size else "it has no values"


def constant(*arrays: np.ndarray) -> bool:
    return all(np.ptp(a) == 0 for a in arrays)


def interval(low: float, high: float) -> tuple[float | None, float | None]:
    return finite(low), finite(high)


# -- effect sizes (textbook formulas) -----------------------------------------------------------


def pooled_sd(x: np.ndarray, y: np.ndarray) -> float:
    """sqrt(((n1 - 1) s1² + (n2 - 1) s2²) / (n1 + n2 - 2))."""
    n1, n2 = x.size, y.size
    return math.sqrt(((n1 - 1) * np.var(x, ddof=1) + (n2 - 1) * np.var(y, ddof=1)) / (n1 + n2 - 2))


def hedges_correction(df: float) -> float:
    """Hedges' exact small-sample factor J(df) = Γ(df/2) / (sqrt(df/2) Γ((df-1)/2))."""
    return math.exp(special.gammaln(df / 2) - 0.5 * math.log(df / 2) - special.gammaln((df - 1) / 2))


def two_group_effect(x: np.ndarray, y: np.ndarray, kind: str) -> float | None:
    """Cohen's d (pooled SD), Hedges' g (d x J(n1 + n2 - 2)) or Glass's Δ (SD of the second group)."""
    difference = float(np.mean(x) - np.mean(y))
    if kind == "glass_delta":
        control_sd = float(np.std(y, ddof=1))
        return difference / control_sd if control_sd > 0 else None
    d = difference / pooled_sd(x, y)
    return d * hedges_correction(x.size + y.size - 2) if kind == "hedges_g" else d


def standardized_mean(values: np.ndarray, kind: str) -> float:
    """d of one sample or of paired differences (d_z): mean / SD; Hedges' g: d x J(n - 1)."""
    d = float(np.mean(values) / np.std(values, ddof=1))
    return d * hedges_correction(values.size - 1) if kind == "hedges_g" else d


def correlation_interval(r: float, se: float, alpha: float, alternative: str) -> tuple[float | None, float | None]:
    """An interval of a rank-biserial correlation through Fisher's z = atanh(r): tanh(z ± q·SE)."""
    z = math.atanh(r) if abs(r) < 1 else math.copysign(math.inf, r)
    if alternative == "two_sided":
        q = float(stats.norm.ppf(1 - alpha / 2))
        return math.tanh(z - q * se), math.tanh(z + q * se)
    q = float(stats.norm.ppf(1 - alpha))
    return (math.tanh(z - q * se), 1.0) if alternative == "greater" else (-1.0, math.tanh(z + q * se))


def t_interval(result: object, alpha: float) -> tuple[float | None, float | None]:
    ci = result.confidence_interval(confidence_level=1 - alpha)  # type: ignore[attr-defined]
    return interval(ci.low, ci.high)


def signed_rank_sums(differences: np.ndarray) -> tuple[float, float]:
    """T+ and T-: the sums of the ranks of |d| of the positive and of the negative differences, zeros
    dropped before ranking (Wilcoxon's treatment, R's and scipy's zero_method="wilcox")."""
    nonzero = differences[differences != 0]
    ranks = stats.rankdata(np.abs(nonzero))
    return float(ranks[nonzero > 0].sum()), float(ranks[nonzero < 0].sum())


# -- pairs ----------------------------------------------------------------------------------------


def matched(a: Group, b: Group, pair_by: str) -> tuple[np.ndarray, np.ndarray]:
    """The values of `a` and `b` aligned by their pair key; every sample must have exactly one partner."""
    keys = {}
    for group in (a, b):
        unkeyed = sum(1 for label in group.labels if not label)
        if unkeyed:
            raise StatisticsError(
                "options.pair_by",
                f"{unkeyed} samples of group {group.name!r} have no {pair_by} in their metadata; "
                "a paired test matches every sample by it",
            )
        repeated = [key for key, count in Counter(group.labels).items() if count > 1]
        if repeated:
            raise StatisticsError(
                "options.pair_by",
                f"group {group.name!r} has more than one sample with {pair_by} {examples(repeated)}; "
                "a paired test needs one sample per key and group",
            )
        keys[group.name] = dict(zip(group.labels, group.values, strict=True))
    only_a = sorted(set(keys[a.name]) - set(keys[b.name]))
    only_b = sorted(set(keys[b.name]) - set(keys[a.name]))
    if only_a or only_b:
        parts = [f"{len(keys_)} of {g.name!r} ({examples(keys_)})" for g, keys_ in ((a, only_a), (b, only_b)) if keys_]
        raise StatisticsError(
            "options.pair_by",
            f"unmatched pairs by {pair_by} between {a.name!r} and {b.name!r}: {' and '.join(parts)} "
            "have no partner in the other group",
        )
    order = sorted(keys[a.name])
    return (
        np.array([keys[a.name][k] for k in order], dtype=float),
        np.array([keys[b.name][k] for k in order], dtype=float),
    )


def examples(keys: Sequence[str]) -> str:
    """The first few keys, quoted, and how many more there are."""
    shown = ", ".join(repr(k) for k in keys[:SHOWN_EXAMPLES])
    return shown + (f" and {len(keys) - SHOWN_EXAMPLES} more" if len(keys) > SHOWN_EXAMPLES else "")


# -- two-group tests: first group versus second ------------------------------------------------


def _check_variance(a: Group, b: Group) -> None:
    if constant(a.values, b.values):
        raise StatisticsError(
            "metric",
            f"group {a.name!r}: {describe(a.values)}, and group {b.name!r}: {describe(b.values)}; "
            "a t-test needs variance within the groups",
        )


def student_t_test(a: Group, b: Group, options: StatisticalOptions, effect: str) -> Finding:
    """Student's two-sample t-test (pooled variance); the interval is of the mean difference."""
    _check_variance(a, b)
    result = stats.ttest_ind(a.values, b.values, alternative=SCIPY_ALTERNATIVE[options.alternative])
    return _t_finding(result, two_group_effect(a.values, b.values, effect), options, _mean_difference(a, b))


def welch_t_test(a: Group, b: Group, options: StatisticalOptions, effect: str) -> Finding:
    """Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom)."""
    _check_variance(a, b)
    result = stats.ttest_ind(a.values, b.values, equal_var=False, alternative=SCIPY_ALTERNATIVE[options.alternative])
    return _t_finding(result, two_group_effect(a.values, b.values, effect), options, _mean_difference(a, b))


def paired_t_test(a: Group, b: Group, options: StatisticalOptions, effect: str) -> Finding:
    """The paired t-test on samples matched by `pair_by`; effect size d_z of the differences."""
    assert options.pair_by is not None
    x, y = matched(a, b, options.pair_by)
    differences = x - y
    if constant(differences):
        raise StatisticsError(
            "metric",
            f"the differences between {a.name!r} and {b.name!r} do not vary ({describe(differences)}); "
            "a paired t-test needs them to",
        )
    result = stats.ttest_rel(x, y, alternative=SCIPY_ALTERNATIVE[options.alternative])
    return _t_finding(result, standardized_mean(differences, effect), options, float(np.mean(differences)))


def _mean_difference(a: Group, b: Group) -> float:
    return float(np.mean(a.values) - np.mean(b.values))


def _t_finding(result: object, effect: float | None, options: StatisticalOptions, difference: float) -> Finding:
    return Finding(
        finite(result.statistic),  # type: ignore[attr-defined]
        finite(result.pvalue),  # type: ignore[attr-defined]
        finite(effect),
        finite(result.df),  # type: ignore[attr-defined]
        t_interval(result, options.alpha),
        "mean_difference",
        finite(difference),
    )


def mann_whitney_u(a: Group, b: Group, options: StatisticalOptions, effect: str) -> Finding:
    """Mann-Whitney U (U of the first group, R's W); rank-biserial r = 2U / (n1 n2) - 1, with a
    Fisher-z interval using the null standard error sqrt((n1 + n2 + 1) / (3 n1 n2))."""
    x, y = a.values, b.values
    pooled = np.concatenate([x, y])
    if constant(pooled):
        raise StatisticsError(
            "metric", f"every value in {a.name!r} and {b.name!r} is {x[0]:.6g}; ranks carry no information"
        )
    n1, n2 = x.size, y.size
    ties = np.unique(pooled).size < pooled.size
    method = p_value_method(
        options, small=n1 < EXACT_BELOW and n2 < EXACT_BELOW, ties=ties, zeros=False, values=n1 + n2
    )
    if method == "exact":
        _refuse_slow_exact(n1 * n2, EXACT_MANN_WHITNEY_LIMIT, f"U for {n1} x {n2} values", " pairs of values")
    corrected = method == "asymptotic" and options.continuity_correction
    result = stats.mannwhitneyu(
        x,
        y,
        use_continuity=corrected,
        alternative=SCIPY_ALTERNATIVE[options.alternative],
        method=_scipy_method(method, options),
    )
    r = 2 * float(result.statistic) / (n1 * n2) - 1
    se = math.sqrt((n1 + n2 + 1) / (3 * n1 * n2))
    splits = float(special.comb(n1 + n2, n1))
    return _rank_finding(float(result.statistic), result.pvalue, r, se, options, method, corrected, splits)


def wilcoxon_signed_rank(a: Group, b: Group, options: StatisticalOptions, effect: str) -> Finding:
    """Wilcoxon's signed-rank test on samples matched by `pair_by`."""
    assert options.pair_by is not None
    x, y = matched(a, b, options.pair_by)
    return _signed_rank(x - y, f"the differences between {a.name!r} and {b.name!r}", options)


def one_sample_wilcoxon(a: Group, options: StatisticalOptions, effect: str) -> Finding:
    """Wilcoxon's signed-rank test of one group against `mu`."""
    assert options.mu is not None
    return _signed_rank(a.values - options.mu, f"the differences between {a.name!r} and mu", options)


def _signed_rank(differences: np.ndarray, what: str, options: StatisticalOptions) -> Finding:
    """The statistic is T+ (R's V) for every alternative; scipy's two-sided statistic is min(T+, T-).
    Zeros are dropped; matched-pairs rank-biserial r = (T+ - T-) / (T+ + T-) with the null
    standard error sqrt(n(n + 1)(2n + 1) / 6) / (n(n + 1) / 2), n the non-zero differences."""
    if not np.any(differences):
        raise StatisticsError("metric", f"{what} are all 0; the signed-rank test needs non-zero differences")
    nonzero = np.abs(differences[differences != 0])
    n = nonzero.size
    ties = np.unique(nonzero).size < n
    zeros = n < differences.size
    method = p_value_method(options, small=n < EXACT_BELOW, ties=ties, zeros=zeros, values=differences.size)
    if method == "exact":
        _refuse_slow_exact(n, EXACT_SIGNED_RANK_LIMIT, f"T+ for {n} non-zero differences")
    corrected = method == "asymptotic" and options.continuity_correction
    result = stats.wilcoxon(
        differences,
        zero_method="wilcox",
        correction=corrected,
        alternative=SCIPY_ALTERNATIVE[options.alternative],
        method=_scipy_method(method, options),
    )
    positive, negative = signed_rank_sums(differences)
    r = (positive - negative) / (positive + negative)
    se = math.sqrt(n * (n + 1) * (2 * n + 1) / 6) / (n * (n + 1) / 2)
    flips = 2.0 ** min(differences.size, 1023)  # scipy flips the signs of zeros too
    return _rank_finding(positive, result.pvalue, r, se, options, method, corrected, flips)


def p_value_method(options: StatisticalOptions, *, small: bool, ties: bool, zeros: bool, values: int) -> str:
    """The p-value's method of a rank test: `auto` follows R's wilcox.test (exact below 50 values
    without ties or zero differences, else the normal approximation); `permutation` is told apart
    as monte_carlo_permutation when the rearrangements outnumber the resamples."""
    method = options.method
    if method == "auto":
        return "exact" if small and not ties and not zeros else "asymptotic"
    if method == "exact" and ties:
        raise StatisticsError(
            "options.method",
            "exact p-values need distinct values, and these data have ties; use permutation (exact given "
            "the ties) or asymptotic (normal approximation with tie correction)",
        )
    if method == "permutation":
        work = values * options.resamples
        limit = work_limit(PERMUTATION_WORK_LIMIT)
        if work > limit:
            raise StatisticsError(
                "options.resamples",
                f"{values} values x {options.resamples} resamples is more than {limit:,} ranked values"
                f"{_of_request()}; use at most {max(limit // values, 0)} resamples, or method asymptotic",
            )
    return method


def _refuse_slow_exact(size: int, limit: int, what: str, unit: str = "") -> None:
    """422 when an exact null distribution of this `size` is past its share of `limit`."""
    limit = work_limit(limit)
    if size > limit:
        raise StatisticsError(
            "options.method",
            f"the exact distribution of {what} takes too long (at most {limit:,}{unit}{_of_request()});"
            " use asymptotic or permutation",
        )


def _scipy_method(method: str, options: StatisticalOptions) -> object:
    """scipy's method argument; permutations are exhaustive when they fit in `resamples`, else drawn."""
    if method != "permutation":
        return method
    assert options.seed is not None
    return stats.PermutationMethod(n_resamples=options.resamples, rng=np.random.default_rng(options.seed))


def _rank_finding(
    statistic: float,
    p: float,
    r: float,
    se: float,
    options: StatisticalOptions,
    method: str,
    corrected: bool,
    rearrangements: float,
) -> Finding:
    """A rank test's statistic and p-value with its rank-biserial r and r's Fisher-z interval.

    scipy's permutation test enumerates every rearrangement when there are no more of them than
    resamples (`rearrangements`: 2^n sign flips, or C(n1 + n2, n1) splits), else draws resamples."""
    if method == "permutation" and rearrangements > options.resamples:
        method = "monte_carlo_permutation"
    return Finding(
        finite(statistic),
        finite(p),
        r,
        None,
        correlation_interval(r, se, options.alpha, options.alternative),
        "rank_biserial",
        r,
        method,
        corrected,
    )


def one_sample_t_test(a: Group, options: StatisticalOptions, effect: str) -> Finding:
    """The one-sample t-test against `mu`; the interval is of the mean, d = (mean - mu) / SD."""
    assert options.mu is not None
    if constant(a.values):
        raise StatisticsError("metric", f"group {a.name!r}: {describe(a.values)}; a t-test needs variance")
    result = stats.ttest_1samp(a.values, options.mu, alternative=SCIPY_ALTERNATIVE[options.alternative])
    return Finding(
        finite(result.statistic),
        finite(result.pvalue),
        finite(standardized_mean(a.values - options.mu, effect)),
        finite(result.df),
        t_interval(result, options.alpha),  # scipy's interval of the one-sample test is of the mean
        "mean",
        finite(np.mean(a.values)),
    )


def fisher_exact(a: Group, b: Group, options: StatisticalOptions, effect: str) -> Finding:
    """Fisher's exact test of a 2x2 table (groups x the two categories); the effect size is Cramér's V (|φ|).

    Two odds ratios, each named: the statistic is the sample odds ratio ad/bc (scipy's); the
    estimate and interval are of the conditional odds ratio, its conditional maximum likelihood
    estimate and exact interval (R's fisher.test): the estimate belongs with that interval."""
    table = contingency_table([a, b])[1]
    if table.shape[1] != 2:
        categories = sorted(set(a.labels) | set(b.labels))
        raise StatisticsError(
            "options.category",
            f"fisher_exact needs exactly 2 categories; {a.name!r} and {b.name!r} have {len(categories)} "
            f"({examples(categories)}); use chi_square",
        )
    alternative = SCIPY_ALTERNATIVE[options.alternative]
    result = stats.fisher_exact(table, alternative=alternative)
    odds = stats.contingency.odds_ratio(table, kind="conditional")
    ci = odds.confidence_interval(confidence_level=1 - options.alpha, alternative=alternative)
    return Finding(
        finite(result.statistic),
        finite(result.pvalue),
        _cramers_v(table),
        None,
        interval(ci.low, ci.high),
        "conditional_odds_ratio",
        finite(odds.statistic),
        "exact",
    )


def _cramers_v(table: np.ndarray) -> float | None:
    """Cramér's V = sqrt(χ² / (n (min(r, c) - 1))), χ² without continuity correction."""
    if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return None
    return float(stats.contingency.association(table, method="cramer"))


def bootstrap(a: Group, b: Group, options: StatisticalOptions, effect: str) -> Finding:
    """scipy.stats.bootstrap interval of the difference in means or medians (first minus second).

    A bootstrap gives an interval, not a p-value: significance is whether it excludes 0."""
    x, y = a.values, b.values
    if constant(x, y):
        raise StatisticsError(
            "metric",
            f"group {a.name!r}: {describe(x)}, and group {b.name!r}: {describe(y)}; resamples would all be equal",
        )
    work = (x.size + y.size) * options.resamples
    limit = work_limit(BOOTSTRAP_WORK_LIMIT)
    if work > limit:
        raise StatisticsError(
            "options.resamples",
            f"{x.size + y.size} samples x {options.resamples} resamples is more than {limit:,} resampled values"
            f"{_of_request()}; use at most {limit // (x.size + y.size)} resamples, or a t-test or Mann-Whitney U",
        )
    if options.bootstrap_method == "BCa" and x.size**2 + y.size**2 > work_limit(BCA_JACKKNIFE_LIMIT):
        raise StatisticsError(
            "options.bootstrap_method",
            f"BCa's jackknife over {x.size} and {y.size} samples would take minutes; "
            "use bootstrap_method percentile or basic",
        )
    center = np.mean if options.statistic == "mean" else np.median

    def difference(first: np.ndarray, second: np.ndarray, axis: int) -> np.ndarray:
        return np.asarray(center(first, axis=axis) - center(second, axis=axis))

    assert options.seed is not None
    result = stats.bootstrap(
        (x, y),
        difference,
        vectorized=True,
        paired=False,
        n_resamples=options.resamples,
        confidence_level=1 - options.alpha,
        alternative=SCIPY_ALTERNATIVE[options.alternative],
        method=options.bootstrap_method,
        rng=np.random.default_rng(options.seed),
    )
    if options.statistic == "mean":
        size = two_group_effect(x, y, effect)
    else:
        size = 2 * float(stats.mannwhitneyu(x, y).statistic) / (x.size * y.size) - 1
    ci = result.confidence_interval
    observed = finite(float(difference(x, y, axis=0)))
    return Finding(
        observed, None, finite(size), None, interval(ci.low, ci.high), f"{options.statistic}_difference", observed
    )


# -- omnibus tests: all groups at once -----------------------------------------------------------


def one_way_anova(groups: list[Group], options: StatisticalOptions, effect: str) -> Finding:
    """One-way ANOVA; η² = SS_between / SS_total, ω² = (SS_between - df_b MS_within) / (SS_total + MS_within)."""
    samples = [g.values for g in groups]
    if constant(*samples):
        raise StatisticsError(
            "metric", "every group is constant (no variance within any group); ANOVA needs variance within groups"
        )
    result = stats.f_oneway(*samples)
    everything = np.concatenate(samples)
    grand = float(everything.mean())
    ss_total = float(((everything - grand) ** 2).sum())
    ss_between = float(sum(s.size * (s.mean() - grand) ** 2 for s in samples))
    k, n = len(samples), everything.size
    ms_within = (ss_total - ss_between) / (n - k)
    if effect == "omega_squared":
        size = (ss_between - (k - 1) * ms_within) / (ss_total + ms_within)
    else:
        size = ss_between / ss_total
    return Finding(finite(result.statistic), finite(result.pvalue), finite(size), [float(k - 1), float(n - k)])


def kruskal_wallis(groups: list[Group], options: StatisticalOptions, effect: str) -> Finding:
    """Kruskal-Wallis H; η²_H = (H - k + 1) / (n - k)."""
    samples = [g.values for g in groups]
    if constant(np.concatenate(samples)):
        raise StatisticsError("metric", f"every value in every group is {samples[0][0]:.6g}; nothing to rank")
    result = stats.kruskal(*samples)
    k, n = len(samples), sum(s.size for s in samples)
    size = (float(result.statistic) - k + 1) / (n - k)
    return Finding(
        finite(result.statistic), finite(result.pvalue), finite(size), float(k - 1), p_value_method="asymptotic"
    )


def contingency_table(groups: list[Group]) -> tuple[list[str], np.ndarray]:
    """Categories (sorted) and the counts of each in each group (rows)."""
    categories = sorted({label for g in groups for label in g.labels})
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(groups), len(categories)), dtype=np.int64)
    for row, group in enumerate(groups):
        for label, count in Counter(group.labels).items():
            table[row, index[label]] = count
    return categories, table


def chi_square(groups: list[Group], options: StatisticalOptions, effect: str) -> Finding:
    """Pearson's χ² test of independence of group and category (Yates' correction on 2x2 tables
    unless continuity_correction is false); effect size Cramér's V."""
    categories, table = contingency_table(groups)
    if len(categories) < 2:
        raise StatisticsError(
            "options.category",
            f"every sample has {options.category} {examples(categories)}; chi_square needs at least 2 categories",
        )
    result = stats.chi2_contingency(table, correction=options.continuity_correction)
    # scipy (like R's chisq.test) applies Yates' correction only with one degree of freedom.
    corrected = options.continuity_correction and int(result.dof) == 1
    return Finding(
        finite(result.statistic),
        finite(result.pvalue),
        _cramers_v(table),
        float(result.dof),
        p_value_method="asymptotic",
        continuity_correction=corrected,
    )
