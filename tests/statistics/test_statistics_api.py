"""Statistical results through the API: telemetry ingested in the in-process service, tests run
on it, results recorded in the resources log and served as a projection.

The data sets are those of tests/statistics/test_statistics.py, so the expected numbers are the same
literals (computed once with scipy; see there).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from scipy import stats

from service.api.statistics import sorted_samples
from tests.api.test_queries_api import ingest, wait_stored
from tests.resource_helpers import call, create_experiment, error, idempotency, walk_with_cursor
from tests.statistics.test_statistics import KEYS, A, B, C, P

RESULTS = "/api/v1/statistical-results"
API_MD_FIELDS = {
    "id",
    "experiment_id",
    "test_type",
    "groups",
    "p_value",
    "effect_size",
    "effect_size_type",
    "confidence_interval",
    "sample_sizes",
    "means",
    "std_devs",
    "interpretation",
}


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9)


TINY = [0.0, 1e-310, 0.25, 2.5e-8, -3.0]  # zero bytes at either end of their float64 encodings


def progress(experiment_id: str, model: str, value: float, **metadata: str) -> dict[str, Any]:
    return {
        "event_name": ["crucible", "run", "progress"],
        "measurements": {"accuracy": value},
        "metadata": {"experiment_id": experiment_id, "model": model, "run_id": f"run_{model}", **metadata},
    }


def verdict(experiment_id: str, model: str, category: str) -> dict[str, Any]:
    return {
        "event_name": ["crucible", "eval", "judgement"],
        "metadata": {"experiment_id": experiment_id, "model": model, "verdict": category},
    }


def loss(experiment_id: str, model: str, value: float) -> dict[str, Any]:
    return {
        "event_name": ["crucible", "run", "progress"],
        "measurements": {"loss": value},
        "metadata": {"experiment_id": experiment_id, "model": model, "run_id": f"run_{model}"},
    }


def telemetry(experiment_id: str) -> list[dict[str, Any]]:
    """accuracy of models a, b, c, p keyed by sample_id (c's last two keys match nobody),
    verdicts x/y of a and b (12/8 and 5/15), and loss of groups too small or flat to test."""
    events = []
    for model, values in (("a", A), ("b", B), ("p", P)):
        events += [progress(experiment_id, model, v, sample_id=k) for k, v in zip(KEYS, values, strict=True)]
    c_keys = [*KEYS[:8], "t8", "t9"]
    events += [progress(experiment_id, "c", v, sample_id=k) for k, v in zip(c_keys, C, strict=True)]
    for model, x, y in (("a", 12, 8), ("b", 5, 15)):
        events += [verdict(experiment_id, model, "x")] * x + [verdict(experiment_id, model, "y")] * y
    events += [loss(experiment_id, "lonely", 0.3)]
    events += [loss(experiment_id, "flat", 0.5)] * 3 + [loss(experiment_id, "level", 0.7)] * 3
    events += [loss(experiment_id, "a", v) for v in A]
    events += [loss(experiment_id, "tiny", v) for v in TINY]
    return events


@pytest.fixture
async def experiment(client: TestClient) -> str:
    """An experiment whose telemetry is stored, beside another experiment's that must not leak in."""
    created = await create_experiment(client, "Stats", config={"metric": "accuracy"})
    noise = [progress("exp_other", "a", 0.1, sample_id=k) for k in KEYS]
    events = telemetry(created["id"]) + noise
    await ingest(client, events)
    await wait_stored(client, len(events))
    return str(created["id"])


def body(experiment_id: str, test_type: str, metric: str | None = "accuracy", **fields: Any) -> dict[str, Any]:
    test: dict[str, Any] = {"experiment_id": experiment_id, "test_type": test_type, **fields}
    if metric is not None:
        test["metric"] = metric
    return {"test": test}


async def run(client: TestClient, experiment_id: str, test_type: str, **fields: Any) -> dict[str, Any]:
    answer = await call(client, "POST", RESULTS, 201, json=body(experiment_id, test_type, **fields))
    return dict(answer["data"])


async def refused(client: TestClient, payload: Any, status: int = 422, code: str = "validation_error") -> Any:
    return await error(client, "POST", RESULTS, status, code, json=payload)


# -- running tests ------------------------------------------------------------------------------


async def test_a_welch_test_answers_every_field_with_scipys_numbers(client: TestClient, experiment: str) -> None:
    result = await run(client, experiment, "welch_t_test", groups=["a", "b"])
    assert set(result) >= API_MD_FIELDS
    assert result["id"].startswith("stat_")
    assert (result["experiment_id"], result["test_type"], result["groups"]) == (experiment, "welch_t_test", ["a", "b"])
    assert result["statistic"] == approx(5.615927500082479)
    assert result["p_value"] == approx(2.53507216397784e-05)
    assert result["degrees_of_freedom"] == approx(17.928317800915554)
    assert result["confidence_interval"] == [approx(0.041928072169272995), approx(0.0920719278307269)]
    assert (result["effect_size_type"], result["effect_size"]) == ("cohens_d", approx(2.511519129378975))
    assert result["sample_sizes"] == [10, 10]
    assert result["means"] == [approx(sum(A) / 10), approx(sum(B) / 10)]
    assert result["method"] == "Welch's two-sample t-test (unequal variances)"
    assert result["interpretation"]["significance"] == "significant"
    assert result["interpretation"]["effect_magnitude"] == "large"
    assert result["interpretation"]["practical_significance"]
    assert result["assumptions"]["satisfied"] is True
    assert result["options"]["alpha"] == 0.05 and result["options"]["group_by"] == "model"
    assert result["telemetry_position"] and all(int(p) >= 0 for p in result["telemetry_position"])


async def test_groups_come_from_run_id_event_name_or_a_metadata_key(client: TestClient, experiment: str) -> None:
    by_run = await run(client, experiment, "welch_t_test", groups=["run_a", "run_b"], options={"group_by": "run_id"})
    assert by_run["statistic"] == approx(5.615927500082479)
    by_key = await run(client, experiment, "chi_square", metric=None, options={"category": "verdict"})
    by_metadata = await run(
        client, experiment, "chi_square", metric=None, options={"category": "verdict", "group_by": "metadata.model"}
    )
    assert by_key["statistic"] == by_metadata["statistic"] == approx(3.6828644501278776)
    by_event = await run(
        client, experiment, "chi_square", metric=None, options={"category": "model", "group_by": "event_name"}
    )
    assert by_event["groups"] == ["crucible.eval.judgement", "crucible.run.progress"]
    assert by_event["contingency"] == {
        "categories": ["a", "b", "c", "flat", "level", "lonely", "p", "tiny"],
        "counts": [[20, 20, 0, 0, 0, 0, 0, 0], [20, 10, 10, 3, 3, 1, 10, 5]],
    }


async def test_without_groups_every_group_is_compared_and_pairs_are_corrected(
    client: TestClient, experiment: str
) -> None:
    anova = await run(client, experiment, "one_way_anova")
    assert anova["groups"] == ["a", "b", "c", "p"]
    assert anova["degrees_of_freedom"] == [3.0, 36.0]
    three = await run(client, experiment, "welch_t_test", groups=["a", "b", "c"])
    raw = [2.53507216397784e-05, 0.0010094474504530851, 0.02015662496635872]
    assert [pair["adjusted_p_value"] for pair in three["pairwise"]] == [
        approx(3 * raw[0]),
        approx(2 * raw[1]),
        approx(raw[2]),
    ]
    assert (three["correction"], three["pair"]) == ("holm", ["a", "b"])


async def test_a_paired_test_matches_samples_by_the_pair_key(client: TestClient, experiment: str) -> None:
    result = await run(client, experiment, "paired_t_test", groups=["a", "p"], options={"pair_by": "sample_id"})
    assert result["statistic"] == approx(3.142936330963102)
    assert result["p_value"] == approx(0.011871767243102004)
    assert result["confidence_interval"] == [approx(0.004203612842015467), approx(0.02579638715798456)]
    wilcoxon = await run(
        client, experiment, "wilcoxon_signed_rank", groups=["a", "p"], options={"pair_by": "sample_id"}
    )
    # R's wilcox.test: V = T+ = 50, normal approximation with continuity correction (the differences tie).
    assert (wilcoxon["statistic_name"], wilcoxon["statistic"]) == ("T_plus", 50.0)
    assert wilcoxon["p_value"] == approx(0.023260619585451631)
    assert (wilcoxon["p_value_method"], wilcoxon["continuity_correction"]) == ("asymptotic", True)
    assert wilcoxon["options"]["method"] == "auto"
    plain = await run(
        client,
        experiment,
        "wilcoxon_signed_rank",
        groups=["a", "p"],
        options={"pair_by": "sample_id", "method": "asymptotic", "continuity_correction": False},
    )
    assert (plain["p_value_method"], plain["continuity_correction"]) == ("asymptotic", False)


async def test_category_tests_count_a_metadata_key(client: TestClient, experiment: str) -> None:
    fisher = await run(client, experiment, "fisher_exact", metric=None, options={"category": "verdict"})
    assert (fisher["statistic_name"], fisher["statistic"]) == ("sample_odds_ratio", 4.5)
    assert fisher["estimate"] == approx(4.31957792967887)  # the conditional MLE, R's fisher.test estimate
    assert fisher["confidence_interval_of"] == "conditional_odds_ratio"
    assert fisher["p_value"] == approx(0.05355099259437413)
    assert fisher["contingency"] == {"categories": ["x", "y"], "counts": [[12, 8], [5, 15]]}
    assert fisher["sample_sizes"] == [20, 20]


async def test_one_sample_and_bootstrap(client: TestClient, experiment: str) -> None:
    one = await run(client, experiment, "one_sample_t_test", groups=["a"], options={"mu": 0.85})
    assert one["statistic"] == approx(4.898979485566357)
    boot = await run(client, experiment, "bootstrap", groups=["a", "b"], options={"resamples": 2000, "seed": 12345})
    # One batch shares its receive time, so each group is tested in order of value (the documented
    # order: timestamp, then value): scipy's interval on sorted(A), sorted(B) with the same seed.
    assert boot["confidence_interval"] == [approx(0.04699999999999993), approx(0.08900000000000013)]
    assert boot["p_value"] is None
    drawn = await run(client, experiment, "bootstrap", groups=["a", "b"], options={"resamples": 200})
    assert isinstance(drawn["options"]["seed"], int)  # recorded, so the result can be reproduced


MONTH_END = dt.datetime(2024, 1, 31, 23, 59, 50, tzinfo=dt.UTC)


def timed(experiment_id: str, index: int, model: str, value: float) -> dict[str, Any]:
    """Four events per second, two per model, across a month's end (two monthly partitions)."""
    return {
        **progress(experiment_id, model, value),
        "id": f"evt_order_{index:03d}",
        "timestamp": (MONTH_END + dt.timedelta(seconds=index // 4)).isoformat(),
    }


async def test_a_seeded_bootstrap_reproduces_whatever_the_insertion_order(client: TestClient) -> None:
    # The same samples inserted at once, and in reverse in separate inserts (separate parts): the
    # documented order (timestamp, then value) gives one result, scipy's on the values in that order.
    rng = np.random.default_rng(3)
    models = ["a", "b"] * 40
    values = np.round(rng.normal(0.5, 0.1, 80), 6)
    ids = []
    for order in ("once", "reversed"):
        created = await create_experiment(client, f"Order {order}")
        events = [timed(created["id"], i, m, float(v)) for i, (m, v) in enumerate(zip(models, values, strict=True))]
        for event in events:
            event["id"] += f"_{order}"
        stored = len(ids) * len(events)
        if order == "once":
            await ingest(client, events)
        else:
            for start in range(len(events) - 20, -1, -20):
                await ingest(client, events[start : start + 20][::-1])
                stored += 20
                await wait_stored(client, stored)
        await wait_stored(client, (len(ids) + 1) * len(events))
        ids.append(created["id"])
    options = {"resamples": 1000, "seed": 2024, "bootstrap_method": "percentile"}
    results = [await run(client, e, "bootstrap", groups=["a", "b"], options=options) for e in ids]
    assert results[0]["confidence_interval"] == results[1]["confidence_interval"]
    seconds = np.arange(80) // 4
    # Each model's values by timestamp, then value (positive floats: their bits sort as the numbers).
    first, second = (values[i::2][np.lexsort((values[i::2], seconds[i::2]))] for i in (0, 1))
    scipy = stats.bootstrap(
        (first, second),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        vectorized=True,
        n_resamples=1000,
        method="percentile",
        rng=np.random.default_rng(2024),
    ).confidence_interval
    assert results[0]["confidence_interval"] == [scipy.low, scipy.high]


def test_samples_sort_by_time_then_value_whatever_their_order() -> None:
    times = np.array([5, 1, 5, 3, 1, 5], dtype="<i8")
    values = np.array([0.5, -0.0, 0.25, 0.75, 0.0, 0.5])
    labels = ["k5", "k1", "j5", "k3", "j1", "m5"]
    expected = sorted_samples("g", values, labels, times)
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(6)
        again = sorted_samples("g", values[order], [labels[i] for i in order], times[order])
        assert again.values.tobytes() == expected.values.tobytes()  # -0.0 and 0.0 too
        assert sorted(zip(again.values.tolist(), again.labels, strict=True)) == sorted(
            zip(expected.values.tolist(), expected.labels, strict=True)
        )
    assert expected.values.tolist() == [0.0, 0.0, 0.75, 0.25, 0.5, 0.5]
    assert np.signbit(expected.values[:2]).tolist() == [True, False]  # -0.0 first: its bits decide
    only_labels = sorted_samples("g", np.zeros(0), labels, times)
    assert only_labels.labels[:2] in (["k1", "j1"], ["j1", "k1"]) and only_labels.labels[2] == "k3"


async def test_the_telemetry_position_moves_with_new_data(client: TestClient, experiment: str) -> None:
    first = await run(client, experiment, "welch_t_test", groups=["a", "b"])
    more = [progress(experiment, "b", 0.84, sample_id="s99")]
    await ingest(client, more)
    await wait_stored(client, len(telemetry(experiment)) + len(KEYS) + 1)
    second = await run(client, experiment, "welch_t_test", groups=["a", "b"])
    assert second["sample_sizes"] == [10, 11]
    positions = [{int(k): v for k, v in r["telemetry_position"].items()} for r in (first, second)]
    assert max(positions[1].values()) > max(positions[0].values())


async def test_values_reach_the_test_bit_for_bit(client: TestClient, experiment: str) -> None:
    result = await run(client, experiment, "one_sample_t_test", metric="loss", groups=["tiny"], options={"mu": 1})
    assert result["sample_sizes"] == [5]
    assert result["means"] == [sum(TINY) / 5]
    assert result["medians"] == [1e-310]  # a denormal survives the trip


# -- the projection ------------------------------------------------------------------------------


async def test_get_and_lists_serve_the_recorded_result(client: TestClient, experiment: str) -> None:
    result = await run(client, experiment, "mann_whitney_u", groups=["a", "c"])
    assert (await call(client, "GET", f"{RESULTS}/{result['id']}", 200))["data"] == result
    listed = await call(client, "GET", RESULTS, 200)
    assert [r["id"] for r in listed["data"]] == [result["id"]]
    assert listed["meta"]["total"] == 1
    scoped = await call(client, "GET", f"/api/v1/experiments/{experiment}/statistical-results", 200)
    assert scoped["data"] == [result]


async def test_results_survive_a_restart(app_client: Any) -> None:
    client = await app_client()
    created = await create_experiment(client, "Stats")
    events = telemetry(created["id"])
    await ingest(client, events)
    await wait_stored(client, len(events))
    result = await run(client, created["id"], "kruskal_wallis", groups=["a", "b", "c"])
    await client.close()
    restarted = await app_client()
    assert (await call(restarted, "GET", f"{RESULTS}/{result['id']}", 200))["data"] == result


async def recorded_results(client: TestClient, experiment: str) -> dict[str, dict[str, Any]]:
    """Five results: three test types, two metrics, two experiments."""
    other = (await create_experiment(client, "Other"))["id"]
    await ingest(client, telemetry(other))
    await wait_stored(client, 2 * len(telemetry(experiment)) + len(KEYS))
    return {
        "welch": await run(client, experiment, "welch_t_test", groups=["a", "b"]),
        "mwu": await run(client, experiment, "mann_whitney_u", groups=["a", "c"]),
        "loss": await run(client, experiment, "welch_t_test", metric="loss", groups=["a", "level"]),
        "other": await run(client, other, "welch_t_test", groups=["b", "c"]),
        "chi": await run(client, other, "chi_square", metric=None, options={"category": "verdict"}),
    }


async def test_filters_sort_and_pages(client: TestClient, experiment: str) -> None:
    results = await recorded_results(client, experiment)
    ids = {name: r["id"] for name, r in results.items()}

    async def listed(**params: str) -> list[str]:
        answer = await call(client, "GET", RESULTS, 200, params=params)
        return [r["id"] for r in answer["data"]]

    assert await listed() == [ids[n] for n in ("chi", "other", "loss", "mwu", "welch")]  # newest first
    assert set(await listed(**{"filter[test_type]": "welch_t_test"})) == {ids["welch"], ids["loss"], ids["other"]}
    assert set(await listed(**{"filter[experiment_id]": experiment})) == {ids["welch"], ids["mwu"], ids["loss"]}
    assert await listed(**{"filter[metric]": "loss"}) == [ids["loss"]]
    both = {"filter[test_type]": "welch_t_test", "filter[experiment_id]": experiment}
    assert set(await listed(**both)) == {ids["welch"], ids["loss"]}
    by_p = sorted(results.values(), key=lambda r: r["p_value"])
    assert await listed(sort="p_value") == [r["id"] for r in by_p]
    assert await listed(sort="-p_value") == [r["id"] for r in reversed(by_p)]
    assert await listed(sort="test_type", per_page="2") == [ids["chi"], ids["mwu"]]
    page_two = await call(client, "GET", RESULTS, 200, params={"per_page": "2", "page": "2"})
    assert [r["id"] for r in page_two["data"]] == [ids["loss"], ids["mwu"]]
    assert (page_two["meta"]["total"], page_two["meta"]["page"], page_two["meta"]["has_more"]) == (5, 2, True)
    walked = await walk_with_cursor(client, RESULTS, per_page=2, sort="created_at")
    assert [r["id"] for r in walked] == [ids[n] for n in ("welch", "mwu", "loss", "other", "chi")]
    scoped = await call(
        client,
        "GET",
        f"/api/v1/experiments/{experiment}/statistical-results",
        200,
        params={"filter[test_type]": "welch_t_test"},
    )
    assert {r["id"] for r in scoped["data"]} == {ids["welch"], ids["loss"]}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"filter[test_type]": "z_test"}, "filter[test_type]"),
        ({"filter[status]": "done"}, "filter[status]"),
        ({"sort": "effect_size"}, "sort"),
        ({"per_page": "101"}, "per_page"),
        ({"filter[created_after]": "yesterday"}, "filter[created_after]"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_list_parameters_are_422(client: TestClient, params: dict[str, str], field: str) -> None:
    problem = await error(client, "GET", RESULTS, 422, "validation_error", params=params)
    assert field in problem["details"]


async def test_unknown_results_and_experiments_are_404(client: TestClient) -> None:
    await error(client, "GET", f"{RESULTS}/stat_nope", 404, "not_found")
    await error(client, "GET", "/api/v1/experiments/exp_nope/statistical-results", 404, "not_found")


async def test_the_experiment_list_takes_no_experiment_filter(client: TestClient, experiment: str) -> None:
    path = f"/api/v1/experiments/{experiment}/statistical-results"
    await error(client, "GET", path, 422, "validation_error", params={"filter[experiment_id]": experiment})


# -- Idempotency-Key ------------------------------------------------------------------------------


async def test_a_retried_test_returns_the_first_result_and_records_nothing(client: TestClient, experiment: str) -> None:
    payload = body(experiment, "welch_t_test", groups=["a", "b"])
    first = await client.post(RESULTS, json=payload, headers=idempotency("stats-1"))
    assert first.status == 201
    await ingest(client, [progress(experiment, "b", 0.5, sample_id="late")])  # new data: a rerun would differ
    await wait_stored(client, len(telemetry(experiment)) + len(KEYS) + 1)
    again = await client.post(RESULTS, json=payload, headers=idempotency("stats-1"))
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json()) == (await first.json())
    assert (await call(client, "GET", RESULTS, 200))["meta"]["total"] == 1
    other = body(experiment, "welch_t_test", groups=["a", "c"])
    await error(client, "POST", RESULTS, 422, "validation_error", json=other, headers=idempotency("stats-1"))


# -- errors ------------------------------------------------------------------------------------


async def test_an_unknown_experiment_is_404(client: TestClient) -> None:
    problem = await refused(client, body("exp_nope", "welch_t_test"), 404, "not_found")
    assert problem["message"] == "experiment exp_nope not found"


async def test_a_group_with_too_few_samples(client: TestClient, experiment: str) -> None:
    problem = await refused(client, body(experiment, "welch_t_test", metric="loss", groups=["a", "lonely"]))
    assert problem["details"] == {
        "groups": ["group 'lonely' has 1 values of loss; welch_t_test needs at least 2 per group"]
    }


async def test_an_unknown_group(client: TestClient, experiment: str) -> None:
    problem = await refused(client, body(experiment, "welch_t_test", groups=["a", "gpt-5"]))
    assert problem["message"] == (
        "no values of accuracy for group 'gpt-5' (grouped by model); groups with samples: 'a', 'b', 'c', 'p'"
    )
    assert "groups" in problem["details"]


async def test_no_samples_at_all(client: TestClient, experiment: str) -> None:
    problem = await refused(client, body(experiment, "welch_t_test", metric="bleu"))
    assert problem["details"] == {"metric": ["the experiment has no values of bleu in any group by model"]}


async def test_zero_variance(client: TestClient, experiment: str) -> None:
    problem = await refused(client, body(experiment, "two_sample_t_test", metric="loss", groups=["flat", "level"]))
    assert "a t-test needs variance within the groups" in problem["message"]
    assert "metric" in problem["details"]


async def test_unmatched_pairs(client: TestClient, experiment: str) -> None:
    payload = body(experiment, "paired_t_test", groups=["a", "c"], options={"pair_by": "sample_id"})
    problem = await refused(client, payload)
    assert problem["details"] == {
        "options.pair_by": [
            "unmatched pairs by sample_id between 'a' and 'c': 2 of 'a' ('s8', 's9') and 2 of 'c' ('t8', 't9') "
            "have no partner in the other group"
        ]
    }


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"alpah": 0.05}, "options.alpah"),
        ({"alpha": 2}, "options.alpha"),
        ({"alpha": "small"}, "options.alpha"),
        ({"alternative": "bigger"}, "options.alternative"),
        ({"correction": "bonferroni"}, "options.correction"),
        ({"resamples": 500}, "options.resamples"),
        ({"pair_by": "sample_id"}, "options.pair_by"),
        ({"method": "exact"}, "options.method"),
    ],
)
async def test_bad_options(client: TestClient, experiment: str, options: dict[str, Any], field: str) -> None:
    problem = await refused(client, body(experiment, "welch_t_test", groups=["a", "b"], options=options))
    assert list(problem["details"]) == [field]


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        ({"method": "fast"}, "options.method", "Invalid enum value 'fast'"),
        ({"method": "exact"}, "options.method", "these data have ties"),
        ({"method": "exact", "continuity_correction": False}, "options.continuity_correction", "not to method exact"),
        ({"seed": 3}, "options.seed", "with method permutation only"),
        ({"method": "permutation", "resamples": 50}, "options.resamples", "Expected `int` >= 100"),
    ],
)
async def test_bad_rank_options(
    client: TestClient, experiment: str, options: dict[str, Any], field: str, words: str
) -> None:
    problem = await refused(client, body(experiment, "mann_whitney_u", groups=["a", "c"], options=options))
    assert list(problem["details"]) == [field]
    assert words in problem["details"][field][0]


async def test_missing_required_options(client: TestClient, experiment: str) -> None:
    problem = await refused(client, body(experiment, "paired_t_test", groups=["a", "p"]))
    assert problem["details"] == {
        "options.pair_by": [
            "is required for paired_t_test: the metadata key that matches samples across groups (such as sample_id)"
        ]
    }


def bad_body(**fields: Any) -> dict[str, Any]:
    return {"test": {"experiment_id": "exp_1", "test_type": "welch_t_test", "metric": "m", **fields}}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"test": {"test_type": "welch_t_test", "metric": "accuracy"}}, "experiment_id"),
        (bad_body(test_type="z_test"), "test_type"),
        (bad_body(metric=None), "metric"),
        (bad_body(groups=["a", "a"]), "groups"),
        (bad_body(groups=[]), "groups"),
        (bad_body(colour=1), "colour"),
        (bad_body(options=3), "options"),
        ({"experiment_id": "exp_1"}, "test"),
    ],
)
async def test_bad_bodies(client: TestClient, payload: dict[str, Any], field: str) -> None:
    problem = await refused(client, payload)
    assert field in problem["details"]


async def test_malformed_json_is_400(client: TestClient) -> None:
    await error(
        client, "POST", RESULTS, 400, "bad_request", data=b"{nope", headers={"Content-Type": "application/json"}
    )
