"""Statistical results (API.md "Statistical Results Endpoints") and comparison reports.

`StatisticalOptions` and `StatisticalOutcome` are also carried by the `StatisticalResultRecorded`
resource event, so they follow the log's rules: every field has a default, no type
ever changes, and unknown fields are ignored when read back. Every float that a test
can leave undefined (a one-sided interval's open end, a test without a p-value) is
`float | None`: JSON has no infinity, and msgspec writes it as null. Names a later
version may extend (statistic_name, p_value_method) are plain strings, not Literals,
so that an older reader still decodes them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, get_args

import msgspec
from msgspec import Meta

StatisticalTestType = Literal[
    "two_sample_t_test",
    "welch_t_test",
    "paired_t_test",
    "one_sample_t_test",
    "mann_whitney_u",
    "wilcoxon_signed_rank",
    "one_way_anova",
    "kruskal_wallis",
    "chi_square",
    "fisher_exact",
    "bootstrap",
]
TEST_TYPES: tuple[str, ...] = get_args(StatisticalTestType)
Alternative = Literal["two_sided", "less", "greater"]
Correction = Literal["holm", "benjamini_hochberg", "none"]
EffectSizeType = Literal[
    "cohens_d", "hedges_g", "glass_delta", "rank_biserial", "eta_squared", "omega_squared", "cramers_v"
]
BootstrapStatistic = Literal["mean", "median"]
BootstrapMethod = Literal["BCa", "percentile", "basic"]
RankMethod = Literal["auto", "exact", "asymptotic", "permutation"]
ReportFormat = Literal["latex", "markdown", "html", "csv"]
REPORT_FORMATS: tuple[str, ...] = get_args(ReportFormat)

Key = Annotated[str, Meta(min_length=1, max_length=128)]
GroupName = Annotated[str, Meta(min_length=1, max_length=4096)]
Alpha = Annotated[float, Meta(gt=0, lt=1)]
MAX_GROUPS = 20


class StatisticalOptions(msgspec.Struct, kw_only=True):
    """How a test runs. Which options a test takes is checked by service/statistics/analysis.py."""

    alpha: Alpha = 0.05
    alternative: Alternative = "two_sided"
    group_by: Key = "model"  # model, run_id, event_name, or a metadata key (`metadata.<key>` also)
    pair_by: Key | None = None  # paired tests: the metadata key that matches samples across groups
    mu: float | None = None  # one-sample tests: the hypothesised mean (median for wilcoxon)
    category: Key | None = None  # chi_square, fisher_exact: the categorical metadata key counted
    correction: Correction = "holm"  # p-values of the pairs when more than two groups are compared
    effect_size: EffectSizeType | None = None  # None: the test's usual one
    continuity_correction: Annotated[
        bool,
        Meta(
            description="chi_square on a 2x2 table: Yates' correction. mann_whitney_u and wilcoxon_signed_rank: "
            "the continuity correction of the normal approximation (R's wilcox.test default); it has no effect "
            "on exact or permutation p-values. The result's continuity_correction says whether it was applied."
        ),
    ] = True
    method: Annotated[
        RankMethod,
        Meta(
            description="mann_whitney_u and wilcoxon_signed_rank: how the p-value is computed. auto follows R's "
            "wilcox.test: exact when every group (wilcoxon: the non-zero differences) has fewer than 50 values "
            "and there are no ties (nor zero differences), else the normal approximation with tie correction "
            "and, unless continuity_correction is false, continuity correction. exact refuses tied data; "
            "permutation is exact given the ties when every rearrangement fits in resamples, else Monte Carlo "
            "with seed. The result's p_value_method says which was used."
        ),
    ] = "auto"
    resamples: Annotated[
        int,
        Meta(ge=100, le=100_000, description="bootstrap, and rank tests with method permutation: random resamples"),
    ] = 9_999
    seed: (
        Annotated[
            int,
            Meta(
                ge=0,
                le=2**63 - 1,
                description="bootstrap, and rank tests with method permutation: the random generator's seed; "
                "absent, one is drawn and recorded, so that seed and data reproduce the result bit for bit",
            ),
        ]
        | None
    ) = None
    statistic: BootstrapStatistic = "mean"  # bootstrap: the difference in means or in medians
    bootstrap_method: BootstrapMethod = "BCa"  # bootstrap: how the interval is built


class StatisticalTestInput(msgspec.Struct, kw_only=True):
    """A test to run on an experiment's telemetry. `groups` absent: every group found, sorted."""

    experiment_id: Annotated[str, Meta(min_length=1, max_length=255)]
    test_type: StatisticalTestType
    metric: Key | None = None  # required except for chi_square and fisher_exact
    groups: Annotated[list[GroupName], Meta(min_length=1, max_length=MAX_GROUPS)] | None = None
    options: StatisticalOptions = msgspec.field(default_factory=StatisticalOptions)


class StatisticalTestBody(msgspec.Struct, kw_only=True):
    test: StatisticalTestInput


class NormalityCheck(msgspec.Struct, kw_only=True):
    """Shapiro-Wilk on one group (or on the differences of a pair): normal when p ≥ alpha."""

    group: str
    n: int
    n_tested: int = 0  # at most 5,000: a seeded random subsample of larger groups
    statistic: float | None = None
    p_value: float | None = None
    passed: bool | None = None  # None: not checked (fewer than 3 values, or all equal)


class VarianceCheck(msgspec.Struct, kw_only=True):
    """Levene's test (centred on the median, Brown-Forsythe) across the groups."""

    statistic: float | None = None
    p_value: float | None = None
    passed: bool | None = None


class ExpectedCounts(msgspec.Struct, kw_only=True):
    """Chi-square's rule of thumb: every expected count at least 5."""

    minimum: float
    cells_below_5: int
    passed: bool


class AssumptionChecks(msgspec.Struct, kw_only=True):
    normality: list[NormalityCheck] = []
    equal_variance: VarianceCheck | None = None
    expected_counts: ExpectedCounts | None = None
    satisfied: bool | None = None  # the assumptions of this test; None when it makes none we check
    recommended_test: str | None = None
    notes: list[str] = []


class PairwiseComparison(msgspec.Struct, kw_only=True):
    """One pair of groups when more than two are compared with a two-group test."""

    groups: list[str]
    statistic: float | None = None
    degrees_of_freedom: float | None = None
    p_value: float | None = None
    adjusted_p_value: float | None = None
    effect_size: float | None = None
    confidence_interval: list[float | None] | None = None
    significant: bool = False
    estimate: float | None = None  # as StatisticalOutcome's
    p_value_method: str | None = None  # as StatisticalOutcome's: a pair's ties can change it
    continuity_correction: bool | None = None


class Contingency(msgspec.Struct, kw_only=True):
    """Counts of each category (columns) in each group (rows)."""

    categories: list[str]
    counts: list[list[int]]


class Interpretation(msgspec.Struct, kw_only=True):
    significance: Literal["significant", "not_significant"] = "not_significant"
    effect_magnitude: Literal["negligible", "small", "medium", "large"] | None = None
    practical_significance: str = ""


class StatisticalOutcome(msgspec.Struct, kw_only=True):
    """What a test found: API.md's fields, the statistic, degrees of freedom and method.

    With more than two groups and a two-group test, every pair is tested (`pairwise`)
    and the top-level statistic, p-value, effect size and interval are those of the
    pair with the smallest adjusted p-value, named in `pair`.
    """

    test_type: str = ""
    method: Annotated[
        str, Meta(description="The test as run, in words, with the p-value's method (as R's `method` of an htest)")
    ] = ""
    metric: str | None = None
    group_by: str = "model"
    groups: list[str] = []
    statistic: Annotated[float | None, Meta(description="The test statistic; statistic_name says which")] = None
    statistic_name: Annotated[
        str | None,
        Meta(
            description="What statistic is: t; F (one_way_anova); H (kruskal_wallis); chi_square; U (Mann-Whitney U "
            "of the first group, R's W); T_plus (Wilcoxon's sum of the ranks of the positive differences, first "
            "minus second or minus mu, R's V, for every alternative); sample_odds_ratio (fisher_exact: ad/bc of "
            "the table, scipy's statistic); mean_difference or median_difference (bootstrap)"
        ),
    ] = None
    degrees_of_freedom: float | list[float] | None = None
    p_value: float | None = None
    p_value_method: Annotated[
        str | None,
        Meta(
            description="How p_value was computed: exact (the null distribution without ties of a rank test, "
            "Fisher's hypergeometric), asymptotic (normal or chi-square approximation), permutation (every "
            "rearrangement of the data, exact given ties) or monte_carlo_permutation (resamples random "
            "rearrangements drawn with seed); none for t-tests and ANOVA, whose t and F distributions are exact "
            "under their assumptions"
        ),
    ] = None
    continuity_correction: Annotated[
        bool | None,
        Meta(
            description="Whether a continuity correction was applied to the p-value: Yates' for chi_square on a "
            "2x2 table, the normal approximation's for rank tests; none for tests that have none"
        ),
    ] = None
    estimate: Annotated[
        float | None,
        Meta(
            description="The point estimate of the quantity confidence_interval_of names: the mean difference "
            "(t-tests, first minus second), the mean (one-sample t), the rank-biserial r (rank tests), the "
            "conditional maximum likelihood estimate of the odds ratio (fisher_exact, as R's fisher.test; the "
            "sample odds ratio is the statistic), the difference in means or medians (bootstrap)"
        ),
    ] = None
    effect_size: float | None = None
    effect_size_type: str | None = None
    confidence_interval: Annotated[
        list[float | None] | None,
        Meta(description="The interval of confidence_interval_of at confidence_level; null ends are infinite"),
    ] = None
    confidence_level: float = 0.95
    confidence_interval_of: Annotated[
        str | None,
        Meta(
            description="The estimand of confidence_interval and estimate: mean_difference, mean, rank_biserial, "
            "conditional_odds_ratio, median_difference"
        ),
    ] = None
    sample_sizes: list[int] = []
    means: list[float | None] = []
    std_devs: list[float | None] = []
    medians: list[float | None] = []
    alternative: str = "two_sided"
    alpha: float = 0.05
    mu: float | None = None  # one-sample tests: the value tested against
    category: str | None = None  # chi_square, fisher_exact: the metadata key counted
    pair: list[str] | None = None
    correction: str | None = None
    pairwise: list[PairwiseComparison] = []
    contingency: Contingency | None = None
    assumptions: AssumptionChecks | None = None
    interpretation: Interpretation = msgspec.field(default_factory=Interpretation)


class StatisticalResultOut(StatisticalOutcome, kw_only=True):
    """A recorded result: the outcome with its id, experiment, options and the data it saw."""

    id: str
    experiment_id: str
    options: StatisticalOptions
    telemetry_position: dict[int, int]  # log partition → highest offset among the rows used
    created_at: dt.datetime


class ComparisonInput(msgspec.Struct, kw_only=True):
    """A report comparing 2-10 experiments' metrics (API.md "Export Comparison Report")."""

    experiment_ids: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=255)]], Meta(min_length=2, max_length=10)
    ]
    format: ReportFormat = "latex"
    template: Literal["publication", "table"] = "publication"  # table: the LaTeX tables alone, no preamble
    metrics: Annotated[list[Key], Meta(min_length=1, max_length=50)] | None = None
    event_name: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None  # samples from these events only
    lower_is_better: Annotated[list[Key], Meta(max_length=50)] | None = None
    caption: Annotated[str, Meta(max_length=2000)] | None = None
    label: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9:_.-]+$")] = "tab:comparison"


class ComparisonCell(msgspec.Struct, kw_only=True):
    """One experiment's samples of one metric: mean with its t-based 95 % interval, and
    Welch's test against the best experiment of the metric (Holm-adjusted beyond two)."""

    n: int
    mean: float | None = None
    std_dev: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    best: bool = False
    p_value_vs_best: float | None = None


class ComparisonRow(msgspec.Struct, kw_only=True):
    experiment_id: str
    name: str
    cells: list[ComparisonCell]


class Comparison(msgspec.Struct, kw_only=True):
    """The numbers of a comparison report, before it is rendered."""

    metrics: list[str]
    lower_is_better: list[bool]
    rows: list[ComparisonRow]
    confidence_level: float = 0.95
    corrected: bool = False  # p-values Holm-adjusted (more than two experiments)


class ComparisonReport(msgspec.Struct, kw_only=True):
    """The answer with `Accept: application/json`: the rendered report and its numbers."""

    format: str
    filename: str
    content_type: str
    content: str
    comparison: Comparison
