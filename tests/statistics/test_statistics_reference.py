"""Every test type and option against reference values computed with R (base R's stats package).

tests/data/statistics_reference.R computes them and writes tests/data/statistics_reference.json
beside it: each case's data, the options sent to the service, R's values and the relative
tolerance with the reason for it. R is not needed here; rerun the script to regenerate the
JSON after changing a case.

Tolerances (relative; the largest difference seen with R 4.2 and scipy 1.17 in brackets):
1e-10 for closed forms: t, F, χ², normal approximations, exact distributions, textbook effect
sizes (2e-14); 1e-12 for permutation p-values, a count over all rearrangements (0); 1e-10 for
Fisher's conditional odds ratio and its interval, roots found numerically on both sides, R's
script solving fisher.test's equations to 1e-15 (5e-15); 1e-3 against fisher.test's own
estimate and interval, which its uniroot solves only to .Machine$double.eps^0.25 (3e-4); 1e-7
for Shapiro-Wilk, whose W and p are polynomial approximations implemented separately in R
(swilk.c) and scipy (Fortran) (2e-9).

Where R and scipy legitimately differ, the service follows R and the case says so: scipy's
defaults for rank tests (asymptotic Mann-Whitney from 9 values per group, exact or permutation
Wilcoxon up to 50 values, no continuity correction for Wilcoxon, min(T+, T-) as the two-sided
statistic) are not R's, and scipy's sample odds ratio is not fisher.test's conditional estimate.
What R cannot give: Monte Carlo permutation and bootstrap intervals (they draw numpy's random
numbers); those are checked against scipy with the same seed in tests/statistics/test_statistics.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.statistics import TEST_TYPES
from service.statistics.analysis import adjust_p_values, resolve_options, run_test
from service.statistics.tests import Group

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "statistics_reference.json").read_text())
CASES: list[dict[str, Any]] = REFERENCE["cases"]


def outcome_of(case: dict[str, Any]) -> Any:
    groups = [Group(g["name"], np.asarray(g["values"], dtype=float), g["labels"]) for g in case["groups"]]
    options = resolve_options(case["test_type"], case["options"])
    metric = None if case["test_type"] in ("chi_square", "fisher_exact") else "value"
    return run_test(case["test_type"], metric, groups, options)


def field(outcome: Any, path: str) -> Any:
    """A value of the outcome by a dotted path: `pairwise.0.adjusted_p_value`."""
    value = outcome
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    return value


def close(actual: Any, expected: Any, tolerance: float) -> bool:
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(close(a, e, tolerance) for a, e in zip(actual, expected, strict=True))
        )
    if expected is None or isinstance(expected, (bool, str)):
        return bool(actual == expected)
    return actual is not None and actual == pytest.approx(expected, rel=tolerance, abs=1e-15)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_matches_r(case: dict[str, Any]) -> None:
    outcome = outcome_of(case)
    wrong = {
        path: (field(outcome, path), expected)
        for path, expected in case["expected"].items()
        if not close(field(outcome, path), expected, case["tolerance"])
    }
    assert not wrong, f"{case['id']} differs from R beyond {case['tolerance']} ({case['why']}): {wrong}"


def test_every_test_type_and_rank_option_has_a_reference() -> None:
    covered = {c["test_type"] for c in CASES}
    assert covered == set(TEST_TYPES)
    options = [c["options"] for c in CASES]
    assert {o.get("method", "auto") for o in options} == {"auto", "exact", "asymptotic", "permutation"}
    assert {o.get("alternative", "two_sided") for o in options} == {"two_sided", "less", "greater"}
    assert {o.get("continuity_correction", True) for o in options} == {True, False}
    assert {o.get("correction", "holm") for o in options} == {"holm", "benjamini_hochberg"}


def test_p_value_adjustments_match_p_adjust() -> None:
    reference = REFERENCE["p_adjust"]
    for method in ("holm", "benjamini_hochberg"):
        assert adjust_p_values(reference["p"], method) == pytest.approx(reference[method], rel=1e-12)
