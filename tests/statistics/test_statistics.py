"""The statistics of service/statistics/analysis.py on fixed data sets, with no app.

Expected numbers are literals, computed once with scipy 1.17 on these data sets; where
a textbook formula gives the number too (t and Welch's degrees of freedom, Cohen's d,
Hedges' exact J, Glass's delta, d_z, eta and omega squared, Cramer's V, Holm, the
rank-biserial r and its Fisher-z interval), the script that computed them checked
scipy against the formula written out by hand.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest
from scipy import stats

from schemas.resources import StatisticalResultRecorded
from service.resources.fold import Resources, event_decoder, event_encoder
from service.statistics import tests as statistical_tests
from service.statistics.analysis import adjust_p_values, mean_interval, resolve_options, run_test, welch_p_value
from service.statistics.assumptions import SHAPIRO_MAX
from service.statistics.interpretation import magnitude
from service.statistics.tests import Group, StatisticsError
from tests.resources.test_resources_fold import Folder, created, envelope

A = [0.89, 0.91, 0.85, 0.88, 0.93, 0.87, 0.90, 0.86, 0.92, 0.89]
B = [0.82, 0.85, 0.79, 0.84, 0.81, 0.86, 0.80, 0.83, 0.78, 0.85]
C = [0.84, 0.88, 0.83, 0.86, 0.85, 0.82, 0.87, 0.84, 0.86, 0.85]
P = [0.88, 0.90, 0.86, 0.85, 0.91, 0.88, 0.87, 0.84, 0.90, 0.86]  # A's partner in paired tests
KEYS = [f"s{i}" for i in range(10)]


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-15)


def group(name: str, values: list[float], labels: list[str] | None = None) -> Group:
    return Group(name, np.asarray(values, dtype=float), labels or [])


def categories(name: str, **counts: int) -> Group:
    return Group(name, np.zeros(0), [category for category, n in counts.items() for _ in range(n)])


def run(test_type: str, groups: list[Group], metric: str | None = "accuracy", **options: Any) -> Any:
    return run_test(test_type, metric, groups, resolve_options(test_type, options))


def refused(test_type: str, groups: list[Group], **options: Any) -> StatisticsError:
    with pytest.raises(StatisticsError) as caught:
        run(test_type, groups, **options)
    return caught.value


# -- each test's numbers ------------------------------------------------------------------------


def test_student_t_test_statistic_p_value_interval_and_effect_sizes() -> None:
    outcome = run("two_sample_t_test", [group("a", A), group("b", B)])
    assert outcome.statistic == approx(5.615927500082478)
    assert outcome.p_value == approx(2.498026701010281e-05)
    assert outcome.degrees_of_freedom == 18.0
    assert outcome.confidence_interval == [approx(0.041935257498590846), approx(0.09206474250140906)]
    assert outcome.confidence_interval_of == "mean_difference"
    assert (outcome.effect_size_type, outcome.effect_size) == ("cohens_d", approx(2.511519129378975))
    assert outcome.sample_sizes == [10, 10]
    assert outcome.means == [approx(np.mean(A)), approx(np.mean(B))]
    assert outcome.std_devs == [approx(np.std(A, ddof=1)), approx(np.std(B, ddof=1))]
    assert outcome.interpretation.significance == "significant"
    assert outcome.interpretation.effect_magnitude == "large"
    assert outcome.interpretation.practical_significance.startswith("a has a significantly higher mean accuracy than b")
    hedges = run("two_sample_t_test", [group("a", A), group("b", B)], effect_size="hedges_g")
    assert (hedges.effect_size_type, hedges.effect_size) == ("hedges_g", approx(2.4051473206514946))
    glass = run("two_sample_t_test", [group("a", A), group("b", B)], effect_size="glass_delta")
    assert glass.effect_size == approx(2.4356927390257446)


def test_a_one_sided_t_test_has_a_one_sided_interval() -> None:
    outcome = run("two_sample_t_test", [group("a", A), group("b", B)], alternative="greater")
    assert outcome.p_value == approx(1.2490133505051406e-05)
    assert outcome.confidence_interval == [approx(0.04631200827616293), None]  # +inf has no JSON form


def test_welch_t_test_uses_welch_satterthwaite_degrees_of_freedom() -> None:
    outcome = run("welch_t_test", [group("a", A), group("b", B)])
    assert outcome.statistic == approx(5.615927500082479)
    assert outcome.p_value == approx(2.53507216397784e-05)
    assert outcome.degrees_of_freedom == approx(17.928317800915554)
    assert outcome.confidence_interval == [approx(0.041928072169272995), approx(0.0920719278307269)]
    less = run("welch_t_test", [group("a", A), group("b", B)], alternative="less", alpha=0.1)
    assert less.p_value == approx(0.9999873246391802)
    assert less.confidence_interval == [None, approx(0.08287445257321566)]
    assert less.confidence_level == approx(0.9)
    assert less.interpretation.significance == "not_significant"


def test_paired_t_test_matches_samples_by_their_key_not_their_order() -> None:
    shuffled = list(zip(KEYS, P, strict=True))[::-1]
    partner = group("p", [v for _, v in shuffled], [k for k, _ in shuffled])
    outcome = run("paired_t_test", [group("a", A, KEYS), partner], pair_by="sample_id")
    assert outcome.statistic == approx(3.142936330963102)
    assert outcome.p_value == approx(0.011871767243102004)
    assert outcome.degrees_of_freedom == 9.0
    assert outcome.confidence_interval == [approx(0.004203612842015467), approx(0.02579638715798456)]
    assert (outcome.effect_size_type, outcome.effect_size) == ("cohens_d", approx(0.9938837346736189))  # d_z
    hedges = run("paired_t_test", [group("a", A, KEYS), partner], pair_by="sample_id", effect_size="hedges_g")
    assert hedges.effect_size == approx(0.9082853904792313)
    assert [check.group for check in outcome.assumptions.normality] == ["a - p"]  # normality of the differences


def test_one_sample_t_test_interval_is_of_the_mean() -> None:
    outcome = run("one_sample_t_test", [group("a", A)], mu=0.85)
    assert outcome.statistic == approx(4.898979485566357)
    assert outcome.p_value == approx(0.0008488413902346817)
    assert outcome.degrees_of_freedom == 9.0
    assert outcome.confidence_interval == [approx(0.871529564110541), approx(0.908470435889459)]
    assert outcome.confidence_interval_of == "mean"
    assert outcome.effect_size == approx(1.5491933384829666)
    assert outcome.mu == 0.85
    assert "differs significantly from 0.85" in outcome.interpretation.practical_significance


def test_mann_whitney_u_with_rank_biserial_and_its_interval() -> None:
    outcome = run("mann_whitney_u", [group("a", A), group("c", C)])
    assert outcome.statistic == 90.0
    assert outcome.p_value == approx(0.002704395529366935)
    assert (outcome.effect_size_type, outcome.effect_size) == ("rank_biserial", approx(0.8))
    assert outcome.confidence_interval == [approx(0.5227050842598603), approx(0.9242125971942137)]
    assert outcome.confidence_interval_of == "rank_biserial"
    assert outcome.degrees_of_freedom is None


def test_wilcoxon_signed_rank_on_pairs_and_against_mu() -> None:
    # The differences have ties (and, against mu, zeros): R's wilcox.test uses the normal
    # approximation with continuity correction, and so does auto. Numbers are R 4.2's.
    outcome = run("wilcoxon_signed_rank", [group("a", A, KEYS), group("p", P, KEYS)], pair_by="sample_id")
    assert (outcome.statistic_name, outcome.statistic) == ("T_plus", 50.0)  # R's V; scipy reports min(T+, T-) = 5
    assert outcome.p_value == approx(0.023260619585451631)
    assert (outcome.p_value_method, outcome.continuity_correction) == ("asymptotic", True)
    assert outcome.method == "Wilcoxon signed-rank test, normal approximation with continuity correction"
    assert outcome.effect_size == approx(0.8181818181818182)
    assert outcome.estimate == outcome.effect_size
    assert outcome.confidence_interval == [approx(0.4235986080892982), approx(0.9517944965511629)]
    one = run("wilcoxon_signed_rank", [group("a", A)], mu=0.88)
    assert one.statistic == 32.0
    assert one.p_value == approx(0.28377195719583115)
    assert one.effect_size == approx(0.4222222222222222)
    assert one.confidence_interval == [approx(-0.2774300096243376), approx(0.829234930209519)]


def test_wilcoxon_reports_t_plus_for_every_alternative() -> None:
    differences = [group("d", [0.5, -1.5, 2.5, 3.5, -4.5, 5.5, 6.5])]
    for alternative in ("two_sided", "less", "greater"):
        outcome = run("wilcoxon_signed_rank", differences, mu=0, alternative=alternative)
        assert outcome.statistic == 1 + 3 + 4 + 6 + 7  # the ranks of the positive differences
        assert outcome.p_value_method == "exact"  # 7 distinct non-zero differences
        assert outcome.continuity_correction is False


# Wilcoxon n=12 with ties and zeros: R's normal approximation with continuity correction gives
# 0.03097; scipy's defaults give 0.03125 (a permutation p-value) and min(T+, T-) = 6 as the statistic.
X12 = [5, 7, 6, 9, 4, 8, 10, 6, 7, 11, 5, 9]
Y12 = [5, 6, 4, 7, 5, 6, 7, 6, 3, 8, 7, 4]


def test_rank_tests_default_to_r_and_say_which_method_they_used() -> None:
    pairs = [group("x", X12, [*KEYS, "s10", "s11"]), group("y", Y12, [*KEYS, "s10", "s11"])]
    auto = run("wilcoxon_signed_rank", pairs, pair_by="k")
    assert (auto.p_value_method, auto.continuity_correction) == ("asymptotic", True)
    assert (auto.statistic, auto.p_value) == (49.0, approx(0.03097489369918469))  # R: wilcox.test(x, y, paired = TRUE)
    plain = run("wilcoxon_signed_rank", pairs, pair_by="k", method="asymptotic", continuity_correction=False)
    assert (plain.p_value_method, plain.continuity_correction) == ("asymptotic", False)
    assert plain.p_value == approx(0.027191224713648078)  # R: correct = FALSE
    assert plain.method == "Wilcoxon signed-rank test, normal approximation"
    exhaustive = run("wilcoxon_signed_rank", pairs, pair_by="k", method="permutation", seed=1)
    assert exhaustive.p_value_method == "permutation"  # 2^12 sign flips, fewer than 9,999 resamples
    assert exhaustive.p_value == approx(0.03125)  # 128 of 4,096 arrangements
    assert exhaustive.method == "Wilcoxon signed-rank test, permutation p-value over every rearrangement"
    mann_whitney = run("mann_whitney_u", [group("a", A), group("c", C)])
    assert mann_whitney.method == "Mann-Whitney U test, normal approximation with continuity correction"
    assert mann_whitney.statistic_name == "U"


def test_a_monte_carlo_permutation_is_scipys_with_the_recorded_seed() -> None:
    rng = np.random.default_rng(5)
    x, y = np.round(rng.normal(0.5, 0.1, 30), 2), np.round(rng.normal(0.45, 0.1, 30), 2)
    options = resolve_options("mann_whitney_u", {"method": "permutation", "resamples": 2000})
    assert options.seed is not None  # drawn, recorded with the options
    outcome = run_test("mann_whitney_u", "m", [group("x", list(x)), group("y", list(y))], options)
    assert outcome.p_value_method == "monte_carlo_permutation"
    assert outcome.method == "Mann-Whitney U test, Monte Carlo permutation p-value"
    scipy = stats.mannwhitneyu(
        x, y, method=stats.PermutationMethod(n_resamples=2000, rng=np.random.default_rng(options.seed))
    )
    assert outcome.p_value == scipy.pvalue
    asymptotic = run("mann_whitney_u", [group("x", list(x)), group("y", list(y))])
    assert abs(outcome.p_value - asymptotic.p_value) < 0.05


def test_pairs_report_their_own_method() -> None:
    distinct = [0.11, 0.23, 0.35, 0.47, 0.59, 0.61, 0.73]
    outcome = run("mann_whitney_u", [group("a", A), group("c", C), group("d", distinct)], correction="none")
    assert [c.p_value_method for c in outcome.pairwise] == ["asymptotic", "asymptotic", "asymptotic"]
    untied = run("mann_whitney_u", [group("d", distinct), group("e", [v + 0.005 for v in distinct]), group("a", A)])
    assert [c.p_value_method for c in untied.pairwise] == ["exact", "asymptotic", "asymptotic"]
    assert [c.continuity_correction for c in untied.pairwise] == [False, True, True]


def test_one_way_anova_with_eta_and_omega_squared() -> None:
    groups = [group("a", A), group("b", B), group("c", C)]
    outcome = run("one_way_anova", groups)
    assert outcome.statistic == approx(19.406072106261878)
    assert outcome.p_value == approx(5.974193249485333e-06)
    assert outcome.degrees_of_freedom == [2.0, 27.0]
    assert (outcome.effect_size_type, outcome.effect_size) == ("eta_squared", approx(0.589741371853645))
    assert outcome.confidence_interval is None
    assert outcome.pairwise == []
    omega = run("one_way_anova", groups, effect_size="omega_squared")
    assert omega.effect_size == approx(0.5509798352740689)
    assert "highest mean: a" in outcome.interpretation.practical_significance


def test_kruskal_wallis_with_eta_squared_of_h() -> None:
    outcome = run("kruskal_wallis", [group("a", A), group("b", B), group("c", C)])
    assert outcome.statistic == approx(17.572464093357258)
    assert outcome.p_value == approx(0.0001528227130476629)
    assert outcome.degrees_of_freedom == 2.0
    assert outcome.effect_size == approx(0.5767579293836022)


def test_chi_square_counts_categories_by_group() -> None:
    groups = [categories("a", x=12, y=8), categories("b", x=5, y=15), categories("c", x=9, y=11)]
    outcome = run("chi_square", groups, metric=None, category="outcome")
    assert outcome.statistic == approx(5.02262443438914)
    assert outcome.p_value == approx(0.08116166759785086)
    assert outcome.degrees_of_freedom == 2.0
    assert (outcome.effect_size_type, outcome.effect_size) == ("cramers_v", approx(0.2893275086123319))
    assert outcome.contingency.categories == ["x", "y"]
    assert outcome.contingency.counts == [[12, 8], [5, 15], [9, 11]]
    assert outcome.sample_sizes == [20, 20, 20]
    assert outcome.assumptions.expected_counts.passed is True
    assert outcome.category == "outcome"


def test_chi_square_on_2x2_applies_yates_unless_told_not_to() -> None:
    groups = [categories("a", x=12, y=8), categories("b", x=5, y=15)]
    yates = run("chi_square", groups, metric=None, category="outcome")
    assert yates.statistic == approx(3.6828644501278776)
    assert yates.p_value == approx(0.05497432872169419)
    assert yates.effect_size == approx(0.35400521619692155)  # V from the uncorrected statistic
    plain = run("chi_square", groups, metric=None, category="outcome", continuity_correction=False)
    assert plain.statistic == approx(5.012787723785166)
    assert plain.p_value == approx(0.025160759200408785)


def test_chi_square_with_small_expected_counts_recommends_fisher() -> None:
    outcome = run("chi_square", [categories("a", x=2, y=3), categories("b", x=4, y=1)], metric=None, category="o")
    assumptions = outcome.assumptions
    assert assumptions.expected_counts.cells_below_5 == 4
    assert assumptions.satisfied is False
    assert assumptions.recommended_test == "fisher_exact"


def test_fisher_exact_odds_ratio_and_its_interval() -> None:
    groups = [categories("a", x=12, y=8), categories("b", x=5, y=15)]
    outcome = run("fisher_exact", groups, metric=None, category="outcome")
    assert (outcome.statistic_name, outcome.statistic) == ("sample_odds_ratio", 4.5)  # 12 x 15 / (8 x 5)
    assert outcome.p_value == approx(0.05355099259437413)
    # The estimate beside the interval is the conditional MLE (R's fisher.test), not the sample odds ratio.
    assert outcome.estimate == approx(4.31957792967887)
    assert outcome.confidence_interval == [approx(0.9817270987639196), approx(21.94903555062118)]
    assert outcome.confidence_interval_of == "conditional_odds_ratio"
    assert outcome.p_value_method == "exact"
    assert "conditional odds ratio 4.32, 95 % CI 0.9817 to 21.95" in outcome.interpretation.practical_significance
    assert outcome.effect_size == approx(0.35400521619692155)
    greater = run("fisher_exact", groups, metric=None, category="outcome", alternative="greater")
    assert greater.p_value == approx(0.026775496297187066)
    assert greater.confidence_interval == [approx(1.19566949879166), None]


def test_bootstrap_interval_equals_scipy_with_the_same_seed() -> None:
    outcome = run("bootstrap", [group("a", A), group("b", B)], resamples=2000, seed=12345)
    assert outcome.confidence_interval == [approx(0.04599999999999982), approx(0.09000000000000008)]
    assert outcome.statistic == approx(0.06699999999999995)
    assert outcome.confidence_interval_of == "mean_difference"
    assert outcome.p_value is None
    assert outcome.effect_size == approx(2.511519129378975)  # Cohen's d
    assert outcome.interpretation.significance == "significant"  # the interval excludes 0
    median = run(
        "bootstrap",
        [group("a", A), group("b", B)],
        resamples=2000,
        seed=7,
        statistic="median",
        bootstrap_method="percentile",
        alpha=0.1,
    )
    assert median.confidence_interval == [approx(0.040000000000000036), approx(0.09499999999999997)]
    assert median.statistic == approx(0.06500000000000006)
    assert (median.effect_size_type, median.effect_size) == ("rank_biserial", approx(0.95))


def test_a_bootstrap_without_a_seed_gets_one_recorded() -> None:
    options = resolve_options("bootstrap", {})
    assert options.seed is not None
    again = run_test("bootstrap", "m", [group("a", A), group("b", B)], msgspec.structs.replace(options, resamples=500))
    first = run_test("bootstrap", "m", [group("a", A), group("b", B)], msgspec.structs.replace(options, resamples=500))
    assert again.confidence_interval == first.confidence_interval


# -- several groups: every pair, corrected ------------------------------------------------------


def test_holm_and_benjamini_hochberg() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert adjust_p_values(p, "holm") == [approx(0.03), approx(0.06), approx(0.06), approx(0.02)]  # by hand
    assert adjust_p_values(p, "benjamini_hochberg") == [approx(0.02), approx(0.04), approx(0.04), approx(0.02)]
    assert adjust_p_values(p, "none") == p
    assert adjust_p_values([0.5, 0.9], "holm") == [approx(1.0), approx(1.0)]  # capped at 1


def test_more_than_two_groups_test_every_pair_with_holm() -> None:
    outcome = run("welch_t_test", [group("a", A), group("b", B), group("c", C)])
    raw = [2.53507216397784e-05, 0.0010094474504530851, 0.02015662496635872]  # ab, ac, bc
    assert [c.groups for c in outcome.pairwise] == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert [c.p_value for c in outcome.pairwise] == [approx(p) for p in raw]
    assert [c.adjusted_p_value for c in outcome.pairwise] == [approx(3 * raw[0]), approx(2 * raw[1]), approx(raw[2])]
    assert all(c.significant for c in outcome.pairwise)
    assert outcome.correction == "holm"
    assert outcome.pair == ["a", "b"]
    assert outcome.p_value == approx(3 * raw[0])
    assert outcome.statistic == approx(5.615927500082479)
    assert "3 of 3 pairs differ significantly (Holm-adjusted" in outcome.interpretation.practical_significance
    bh = run("welch_t_test", [group("a", A), group("b", B), group("c", C)], correction="benjamini_hochberg")
    assert bh.correction == "benjamini_hochberg"
    assert [c.adjusted_p_value for c in bh.pairwise] == [approx(3 * raw[0]), approx(1.5 * raw[1]), approx(raw[2])]


def test_two_groups_need_no_correction() -> None:
    outcome = run("welch_t_test", [group("a", A), group("b", B)])
    assert outcome.correction is None
    assert outcome.pairwise == []
    assert outcome.pair is None


# -- assumption checks ------------------------------------------------------------------------------

SKEWED = [0.1, 0.1, 0.12, 0.11, 0.1, 0.13, 0.1, 0.95, 0.11, 0.1, 0.12, 0.99]


def test_normal_looking_groups_pass_shapiro_and_levene() -> None:
    checks = run("two_sample_t_test", [group("a", A), group("b", B)]).assumptions
    assert [c.group for c in checks.normality] == ["a", "b"]
    assert checks.normality[0].statistic == approx(0.9795909356387507)
    assert checks.normality[0].p_value == approx(0.9629412943909634)
    assert checks.equal_variance.statistic == approx(0.22752808988763398)
    assert checks.equal_variance.p_value == approx(0.6391027278108417)
    assert checks.satisfied is True
    assert checks.recommended_test is None


@pytest.mark.parametrize(
    ("test_type", "options", "recommended"),
    [
        ("two_sample_t_test", {}, "mann_whitney_u"),
        ("welch_t_test", {}, "mann_whitney_u"),
        ("one_way_anova", {}, "kruskal_wallis"),
        ("paired_t_test", {"pair_by": "sample_id"}, "wilcoxon_signed_rank"),
    ],
)
def test_non_normal_data_recommends_a_rank_test(test_type: str, options: dict[str, Any], recommended: str) -> None:
    keys = [f"k{i}" for i in range(12)]
    others = [0.5 + 0.01 * i for i in range(12)]
    checks = run(test_type, [group("skewed", SKEWED, keys), group("even", others, keys)], **options).assumptions
    assert checks.satisfied is False
    assert checks.recommended_test == recommended
    assert any("Shapiro" in note for note in checks.notes)


def test_unequal_variances_recommend_welch_for_student() -> None:
    narrow = [0.5 + 0.001 * v for v in (-2, -1, 0, 1, 2, -1, 0, 1, 0, 0, 1, -1)]
    wide = [0.5 + 0.1 * v for v in (-2, -1, 0, 1, 2, -1, 0, 1, 0, 0, 1, -1)]
    student = run("two_sample_t_test", [group("n", narrow), group("w", wide)]).assumptions
    assert student.equal_variance.passed is False
    assert student.recommended_test == "welch_t_test"
    welch = run("welch_t_test", [group("n", narrow), group("w", wide)]).assumptions
    assert welch.satisfied is True  # Welch does not assume equal variances


def test_large_groups_are_checked_on_a_subsample() -> None:
    rng = np.random.default_rng(1)
    big = Group("big", rng.normal(0, 1, 20_000))
    other = Group("other", rng.normal(0.1, 1, 300))
    checks = run("welch_t_test", [big, other]).assumptions
    assert (checks.normality[0].n, checks.normality[0].n_tested) == (20_000, SHAPIRO_MAX)
    assert (checks.normality[1].n, checks.normality[1].n_tested) == (300, 300)


def test_rank_and_category_tests_make_no_recommendation() -> None:
    checks = run("mann_whitney_u", [group("s", SKEWED), group("a", A)]).assumptions
    assert checks.satisfied is None and checks.recommended_test is None
    assert run("bootstrap", [group("a", A), group("b", B)], resamples=200, seed=1).assumptions is None


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("cohens_d", 0.19, "negligible"),
        ("cohens_d", -0.2, "small"),
        ("hedges_g", 0.5, "medium"),
        ("glass_delta", 0.8, "large"),
        ("rank_biserial", 0.29, "small"),
        ("rank_biserial", 0.5, "large"),
        ("eta_squared", 0.059, "small"),
        ("omega_squared", 0.14, "large"),
        ("cramers_v", 0.3, "medium"),
    ],
)
def test_effect_magnitude_follows_cohen(kind: str, value: float, expected: str) -> None:
    assert magnitude(kind, value) == expected


def test_cramers_v_thresholds_shrink_with_more_categories() -> None:
    assert magnitude("cramers_v", 0.25, v_df=1) == "small"
    assert magnitude("cramers_v", 0.25, v_df=2) == "medium"  # w 0.3 / sqrt(2) = 0.21


# -- what a test refuses --------------------------------------------------------------------------


def test_too_few_samples() -> None:
    error = refused("welch_t_test", [group("a", A), group("b", [0.5])])
    assert error.field == "groups"
    assert error.message == "group 'b' has 1 values of accuracy; welch_t_test needs at least 2 per group"


@pytest.mark.parametrize(
    ("test_type", "groups", "options", "words"),
    [
        ("two_sample_t_test", [[0.5, 0.5], [0.7, 0.7]], {}, "a t-test needs variance within the groups"),
        ("welch_t_test", [[0.5, 0.5, 0.5], [0.7, 0.7]], {}, "every value is 0.5"),
        ("one_sample_t_test", [[0.5, 0.5, 0.5]], {"mu": 1}, "a t-test needs variance"),
        ("one_way_anova", [[0.5, 0.5], [0.7, 0.7], [0.1, 0.1]], {}, "ANOVA needs variance within groups"),
        ("mann_whitney_u", [[0.5, 0.5], [0.5, 0.5]], {}, "ranks carry no information"),
        ("kruskal_wallis", [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]], {}, "nothing to rank"),
        ("bootstrap", [[0.5, 0.5], [0.7, 0.7]], {"resamples": 100}, "resamples would all be equal"),
    ],
)
def test_zero_variance(test_type: str, groups: list[list[float]], options: dict[str, Any], words: str) -> None:
    named = [group(chr(ord("a") + i), values) for i, values in enumerate(groups)]
    error = refused(test_type, named, **options)
    assert error.field == "metric"
    assert words in error.message


def test_paired_tests_refuse_differences_without_variance() -> None:
    error = refused("paired_t_test", [group("a", [1, 2, 3], KEYS[:3]), group("b", [0, 1, 2], KEYS[:3])], pair_by="k")
    assert "do not vary" in error.message
    error = refused("wilcoxon_signed_rank", [group("a", [1, 2], KEYS[:2]), group("b", [1, 2], KEYS[:2])], pair_by="k")
    assert "are all 0" in error.message


def test_unmatched_pairs_name_the_keys() -> None:
    error = refused("paired_t_test", [group("a", A, KEYS), group("b", B[:8], KEYS[:8])], pair_by="sample_id")
    assert error.field == "options.pair_by"
    assert error.message == (
        "unmatched pairs by sample_id between 'a' and 'b': 2 of 'a' ('s8', 's9') have no partner in the other group"
    )


def test_a_sample_without_a_pair_key_is_refused() -> None:
    error = refused("paired_t_test", [group("a", A[:2], ["k", ""]), group("b", B[:2], ["k", "j"])], pair_by="id")
    assert error.message.startswith("1 samples of group 'a' have no id in their metadata")


def test_a_repeated_pair_key_is_refused() -> None:
    error = refused("paired_t_test", [group("a", A[:2], ["k", "k"]), group("b", B[:2], ["k", "j"])], pair_by="id")
    assert "group 'a' has more than one sample with id 'k'" in error.message


@pytest.mark.parametrize(
    ("test_type", "count", "words"),
    [
        ("welch_t_test", 1, "compares at least 2 groups; found 1"),
        ("one_way_anova", 1, "compares at least 2 groups"),
        ("one_sample_t_test", 2, "tests exactly one group; found 2"),
        ("bootstrap", 3, "compares at most 2 groups; found 3"),
    ],
)
def test_group_counts(test_type: str, count: int, words: str) -> None:
    options = {"mu": 0.5} if test_type == "one_sample_t_test" else {}
    error = refused(test_type, [group(f"g{i}", A) for i in range(count)], **options)
    assert (error.field, words in error.message) == ("groups", True)


def test_wilcoxon_needs_mu_for_one_group_and_pair_by_for_two() -> None:
    assert refused("wilcoxon_signed_rank", [group("a", A)]).field == "options.mu"
    assert refused("wilcoxon_signed_rank", [group("a", A), group("b", B)]).field == "options.pair_by"
    both = refused("wilcoxon_signed_rank", [group("a", A, KEYS), group("b", B, KEYS)], pair_by="k", mu=1)
    assert both.field == "options.mu"


def test_category_tests_need_categories() -> None:
    one = refused("chi_square", [categories("a", x=3), categories("b", x=4)], category="outcome")
    assert (one.field, "needs at least 2 categories" in one.message) == ("options.category", True)
    three = refused("fisher_exact", [categories("a", x=3, y=1, z=2), categories("b", x=4)], category="outcome")
    assert "fisher_exact needs exactly 2 categories" in three.message
    assert "use chi_square" in three.message


def test_rank_methods_the_data_cannot_give_are_refused() -> None:
    tied = refused("mann_whitney_u", [group("a", A), group("c", C)], method="exact")
    assert (tied.field, "these data have ties; use permutation" in tied.message) == ("options.method", True)
    pairs = refused("wilcoxon_signed_rank", [group("a", A, KEYS), group("p", P, KEYS)], pair_by="k", method="exact")
    assert pairs.field == "options.method"
    wide = [group("a", list(np.linspace(0, 1, 150))), group("b", list(np.linspace(0.001, 1.001, 150)))]
    assert "takes too long" in refused("mann_whitney_u", wide, method="exact").message
    long = [group("d", list(np.linspace(0.001, 1, 600)))]
    assert refused("wilcoxon_signed_rank", long, mu=0, method="exact").field == "options.method"
    many = refused("mann_whitney_u", wide, method="permutation", resamples=20_000)
    assert (many.field, "use at most 16666 resamples" in many.message) == ("options.resamples", True)


def test_bootstraps_too_large_for_the_machine_are_refused() -> None:
    big = [group("a", list(np.linspace(0, 1, 60_000))), group("b", list(np.linspace(0, 2, 60_000)))]
    assert refused("bootstrap", big, resamples=9_999).field == "options.resamples"
    bca = [group("a", list(np.linspace(0, 1, 5_000))), group("b", list(np.linspace(0, 2, 5_000)))]
    assert refused("bootstrap", bca, resamples=100).field == "options.bootstrap_method"


@pytest.mark.parametrize(
    ("test_type", "options", "field", "words"),
    [
        ("welch_t_test", {"resamples": 100}, "options.resamples", "does not apply to welch_t_test; it takes"),
        ("one_way_anova", {"pair_by": "x"}, "options.pair_by", "does not apply to one_way_anova"),
        ("paired_t_test", {}, "options.pair_by", "is required for paired_t_test"),
        ("one_sample_t_test", {}, "options.mu", "is required for one_sample_t_test"),
        ("chi_square", {}, "options.category", "is required for chi_square"),
        ("kruskal_wallis", {"alternative": "less"}, "options.alternative", "must be two_sided for kruskal_wallis"),
        ("welch_t_test", {"effect_size": "eta_squared"}, "options.effect_size", "reports cohens_d, hedges_g"),
        ("bootstrap", {"statistic": "median", "effect_size": "cohens_d"}, "options.effect_size", "rank_biserial"),
        ("welch_t_test", {"group_by": "experiment_id"}, "options.group_by", "cannot be experiment_id"),
        ("welch_t_test", {"method": "exact"}, "options.method", "does not apply to welch_t_test"),
        ("mann_whitney_u", {"seed": 1}, "options.seed", "with method permutation only"),
        ("wilcoxon_signed_rank", {"resamples": 500, "method": "exact"}, "options.resamples", "permutation only"),
        (
            "mann_whitney_u",
            {"method": "exact", "continuity_correction": True},
            "options.continuity_correction",
            "not to method exact",
        ),
        (
            "wilcoxon_signed_rank",
            {"method": "permutation", "continuity_correction": False},
            "options.continuity_correction",
            "applies to the normal approximation",
        ),
    ],
)
def test_options_that_do_not_fit_the_test(test_type: str, options: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(StatisticsError) as caught:
        resolve_options(test_type, options)
    assert caught.value.field == field
    assert words in caught.value.message


# -- the comparison report's numbers ---------------------------------------------------------------


def test_t_interval_of_a_mean_and_welch_from_summaries() -> None:
    mean, sd = float(np.mean(A)), float(np.std(A, ddof=1))
    assert mean_interval(10, mean, sd, 0.95) == (approx(0.8715295641105409), approx(0.9084704358894591))
    assert mean_interval(1, mean, None, 0.95) == (None, None)
    assert mean_interval(3, 0.5, 0.0, 0.95) == (0.5, 0.5)
    summary_b = (10, float(np.mean(B)), float(np.std(B, ddof=1)))
    assert welch_p_value((10, mean, sd), summary_b) == approx(2.53507216397784e-05)  # as ttest_ind on the values
    assert welch_p_value((1, mean, None), summary_b) is None


# -- the resource event -------------------------------------------------------------------------


def recorded(experiment_id: str = "exp_1", stat_id: str = "stat_1") -> StatisticalResultRecorded:
    options = resolve_options("welch_t_test", {})
    outcome = run_test("welch_t_test", "accuracy", [group("a", A), group("b", B)], options)
    return StatisticalResultRecorded(
        **envelope(),
        stat_id=stat_id,
        experiment_id=experiment_id,
        options=options,
        outcome=outcome,
        telemetry_position={0: 41, 3: 7},
    )


def test_the_event_survives_the_log_unchanged() -> None:
    event = recorded()
    assert event_decoder.decode(event_encoder.encode(event)) == event


def test_the_fold_records_a_result_of_an_existing_experiment_only() -> None:
    folder = Folder(Resources())
    assert folder.apply(recorded()).code == "not_found"
    folder.accept(created("exp_1"))
    folder.accept(recorded())
    result = folder.state.statistical_results["stat_1"]
    assert (result.experiment_id, result.outcome.test_type, result.telemetry_position) == (
        "exp_1",
        "welch_t_test",
        {0: 41, 3: 7},
    )
    assert folder.apply(recorded()).code == "conflict"


def test_the_work_limits_hold_for_a_request_not_for_each_pair_of_groups() -> None:
    """20 groups are 190 pairs: each pair gets 1/190 of the request's permutation budget, so a
    request that would take minutes of CPU (190 pairs each just under the limit) is refused."""
    rng = np.random.default_rng(3)
    groups = [group(f"g{i}", list(np.round(rng.normal(0.5, 0.1, 25), 3))) for i in range(20)]
    per_pair = statistical_tests.PERMUTATION_WORK_LIMIT // 50  # resamples of 50 values that one pair may use
    problem = refused("mann_whitney_u", groups, method="permutation", resamples=per_pair)
    assert problem.field == "options.resamples"
    assert "shared by its 190 pairs" in str(problem)
    two = run("mann_whitney_u", groups[:2], method="permutation", resamples=per_pair // 100)
    assert two.p_value_method == "monte_carlo_permutation"
