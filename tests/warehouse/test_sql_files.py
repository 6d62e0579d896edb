"""Every `.sql` file of queries/ runs on chDB, with the parameters its callers pass."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import pytest

import queries
from service.http.appkeys import WAREHOUSE

FILTERS: dict[str, Any] = {
    "event_name": "crucible.model.inference",
    "experiment_id": "exp_1",
    "run_id": None,
    "model": None,
    "after": "2024-01-01 00:00:00.000000",
    "before": None,
}
PAGE: dict[str, Any] = {
    **FILTERS,
    "snapshot": "2030-01-01 00:00:00.000000",
    "sort_column": "timestamp",
    "cursor_time": "2024-02-01 00:00:00.000000",
    "cursor_id": "evt_1",
    "limit": 26,
    "offset": 0,
}
AGGREGATE: dict[str, Any] = {**FILTERS, "metric": "latency", "interval_seconds": 300, "limit": 1000}
GROUPS: dict[str, dict[str, Any]] = {
    "none": {"grouped": False, "by_metadata": False, "group_column": "event_name", "group_key": ""},
    "column": {"grouped": True, "by_metadata": False, "group_column": "model", "group_key": ""},
    "metadata": {"grouped": True, "by_metadata": True, "group_column": "event_name", "group_key": "region"},
}
PARAMETERS: dict[str, dict[str, Any]] = {
    "migration_applied": {},
    "writer_resume_offset": {"partition": 0, "committed": 0},
    "writer_retry_window": {"partition": 0, "limit": 100},
    "writer_stored_records": {"partition": 0, "first": 0, "last": 10},
    "writer_stored_batch": {"partition": 0, "before": 10},
    "telemetry_events_desc": PAGE,
    "telemetry_events_asc": PAGE,
    "telemetry_events_count": {k: PAGE[k] for k in (*FILTERS, "snapshot")},
    "telemetry_aggregate": {**AGGREGATE, **GROUPS["column"]},
    "telemetry_quantiles": {**AGGREGATE, **GROUPS["column"]},
    "telemetry_aggregate_events": {**AGGREGATE, **GROUPS["column"]},
    "telemetry_quantiles_events": {**AGGREGATE, **GROUPS["metadata"]},
    "resource_events_resume": {},
    "telemetry_stored_offsets": {},
    "telemetry_export": {**FILTERS, "snapshot": "2030-01-01 00:00:00.000000"},
    "experiment_telemetry": {"experiment_id": "exp_1", "partitions": [0, 1], "ends": [10, 20]},
    "telemetry_positions": {"experiment_id": "exp_1"},
    "model_statistics": {
        "model_id": "model_1",
        "model_name": "gpt-4",
        "since": "2024-01-01 00:00:00.000000",
        "until": "2024-01-02 00:00:00.000000",
    },
    "run_latest_values": {"experiment_ids": ["exp_1"], "run_ids": ["run_1"], "keys": []},
    "run_metric_history": {"experiment_id": "exp_1", "run_id": "run_1", "name": "loss", "max_points": 1000},
    "run_logs": {
        "experiment_id": "exp_1",
        "run_id": "run_1",
        "min_severity": 2,
        "since": None,
        "cursor_time": "2024-02-01 00:00:00.000000",
        "cursor_partition": 0,
        "cursor_offset": 10,
        "cursor_index": 3,
        "limit": 101,
    },
    "run_logs_tail": {"experiment_id": "exp_1", "run_id": "run_1", "min_severity": 1, "since": None, "limit": 10},
    "run_logs_count": {"experiment_id": "exp_1", "run_id": "run_1", "min_severity": 1, "since": None},
    "run_checkpoints": {"experiment_ids": ["exp_1"], "run_ids": ["run_1"]},
    "experiment_best_metric": {"experiment_id": "exp_1", "metric": "accuracy"},
    "statistical_samples": {
        "experiment_id": "exp_1",
        "metric": "accuracy",
        "collect_values": True,
        "group_column": "model",
        "group_key": "",
        "groups": ["gpt-4"],
        "label_key": "sample_id",
        "label_required": False,
    },
    "comparison_metrics": {"experiment_ids": ["exp_1", "exp_2"], "metrics": [], "event_name": None},
}


def query_names() -> list[str]:
    return sorted(p.name.removesuffix(".sql") for p in files(queries).iterdir() if p.name.endswith(".sql"))


def test_every_query_file_has_parameters_here() -> None:
    assert query_names() == sorted(PARAMETERS), "add the new query's parameters to PARAMETERS"


@pytest.mark.parametrize("name", query_names())
async def test_query_runs_on_chdb(client: Any, name: str) -> None:
    body = await client.app[WAREHOUSE].query(name, PARAMETERS[name])
    assert isinstance(body, bytes)


AGGREGATE_EVENT_FILES = ("telemetry_aggregate_events", "telemetry_quantiles_events")


@pytest.mark.parametrize("name", AGGREGATE_EVENT_FILES)
@pytest.mark.parametrize("group", sorted(GROUPS))
async def test_one_aggregate_text_serves_every_grouping(client: Any, name: str, group: str) -> None:
    body = await client.app[WAREHOUSE].query(name, {**AGGREGATE, **GROUPS[group]})
    assert isinstance(body, bytes)


async def test_without_a_group_the_aggregate_files_group_by_time_alone(client: Any) -> None:
    """The `if` choosing the group folds to a constant without a group: the plan's grouping
    keys name neither a column nor the metadata, so the query reads neither for grouping."""
    with client.app[WAREHOUSE].dedicated_client() as warehouse:
        for name in ("telemetry_aggregate", "telemetry_quantiles", *AGGREGATE_EVENT_FILES):
            groups = sorted(GROUPS) if name in AGGREGATE_EVENT_FILES else ["none", "column"]
            keys = {
                group: [
                    line.partition("Keys:")[2].strip()
                    for (line,) in warehouse.query(
                        f"EXPLAIN actions = 1 {queries.load(name)}", _plan(group)
                    ).result_rows
                    if "Keys:" in line
                ]
                for group in groups
            }
            assert keys["none"] == ["if(0, NULL, toStartOfInterval(timestamp, 300))"], keys
            assert "model" in keys["column"][0], keys
            if name in AGGREGATE_EVENT_FILES:
                assert "metadata.key_region" in keys["metadata"][0], keys


def _plan(group: str) -> dict[str, Any]:
    return {**AGGREGATE, **GROUPS[group]}


def test_migrations_are_numbered_without_gaps() -> None:
    numbers = [number for number, _, _ in queries.migrations()]
    assert numbers == list(range(1, len(numbers) + 1))


async def test_migrations_apply_once(client: Any) -> None:
    from service.warehouse.migrations import applied_versions, migrate

    warehouse = client.app[WAREHOUSE]
    assert await applied_versions(warehouse) == {n for n, _, _ in queries.migrations()}
    assert await migrate(warehouse) == []


def test_telemetry_events_merge_one_column_at_a_time(client: Any) -> None:
    # 0008: ClickHouse's default merges all 10 columns outside the sort key at once.
    with client.app[WAREHOUSE].dedicated_client() as warehouse:
        engine = warehouse.command("SELECT engine_full FROM system.tables WHERE name = 'telemetry_events'")
    assert "vertical_merge_algorithm_min_columns_to_activate = 1" in str(engine)
