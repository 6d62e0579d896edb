"""/api/v1/experiments: CRUD, actions, clone, history, as_of, lists, Idempotency-Key, bad input, restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from service.http.appkeys import PROJECTOR
from tests.resource_helpers import (
    EXPERIMENTS,
    MODELS,
    act,
    call,
    create_experiment,
    create_model,
    error,
    get_experiment,
    history,
    idempotency,
    list_experiments,
    walk_with_cursor,
)

DETAIL_FIELDS = {
    "id",
    "name",
    "description",
    "status",
    "config",
    "tags",
    "started_at",
    "completed_at",
    "created_at",
    "updated_at",
    "cloned_from",
    "error",
    "progress",
    "runs",
    "results_summary",
}
CONFIG = {"type": "ensemble", "models": ["gpt-4", "claude-3"], "voting_strategy": "majority", "sample_size": 1000}


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["id"] for row in rows]


async def experiment_in_status(client: TestClient, status: str, name: str = "E") -> dict[str, Any]:
    """A new experiment brought to `status` through the actions."""
    experiment = await create_experiment(client, name)
    path = {"pending": [], "running": ["start"], "paused": ["start", "pause"], "cancelled": ["cancel"]}[status]
    for action in path:
        experiment = (await act(client, experiment["id"], action))["data"]
    assert experiment["status"] == status
    return experiment


# -- create and get ------------------------------------------------------------------------------


async def test_create_answers_201_with_the_new_pending_experiment(client: TestClient) -> None:
    experiment = await create_experiment(
        client, "New Ensemble Test", description="Testing majority voting", config=CONFIG, tags=["ensemble", "cmp"]
    )
    assert set(experiment) == DETAIL_FIELDS
    assert experiment["id"].startswith("exp_")
    assert experiment["name"] == "New Ensemble Test"
    assert experiment["description"] == "Testing majority voting"
    assert experiment["config"] == CONFIG
    assert experiment["tags"] == ["ensemble", "cmp"]
    assert experiment["status"] == "pending"
    assert experiment["started_at"] is None and experiment["completed_at"] is None
    assert experiment["created_at"] == experiment["updated_at"]
    assert experiment["cloned_from"] is None


async def test_get_returns_every_field_with_no_runs_and_an_empty_results_summary(client: TestClient) -> None:
    created = await create_experiment(client, config=CONFIG, tags=["a"])
    experiment = await get_experiment(client, created["id"])
    assert experiment == created
    assert experiment["runs"] == []
    assert experiment["progress"] == 0.0
    assert experiment["results_summary"] == {
        "best_accuracy": None,
        "metric": "accuracy",
        "total_runs": 0,
        "completed_runs": 0,
        "failed_runs": 0,
    }


async def test_results_summary_names_the_configured_metric(client: TestClient) -> None:
    experiment = await create_experiment(client, config={"metric": "f1"})
    assert experiment["results_summary"]["metric"] == "f1"


async def test_only_the_name_is_required(client: TestClient) -> None:
    experiment = await create_experiment(client, "x" * 255)
    assert (experiment["name"], experiment["description"], experiment["config"], experiment["tags"]) == (
        "x" * 255,
        "",
        {},
        [],
    )


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": None}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": 5}, "name"),
        ({"name": "ok", "config": [1, 2]}, "config"),
        ({"name": "ok", "config": "text"}, "config"),
        ({"name": "ok", "tags": "a,b"}, "tags"),
        ({"name": "ok", "tags": ["a", 1]}, "tags"),
        ({"name": "ok", "description": 3}, "description"),
        ({"name": "ok", "description": "d" * 10_001}, "description"),
        ({"name": "ok", "tags": ["t"] * 101}, "tags"),
        ({"name": "ok", "tags": ["t" * 101]}, "tags"),
        ({"name": "ok", "status": "running"}, "status"),
    ],
)
async def test_create_refuses_bad_fields_with_details_by_field(client: TestClient, fields: Any, bad: str) -> None:
    problem = await error(client, "POST", EXPERIMENTS, 422, "validation_error", json={"experiment": fields})
    assert list(problem["details"]) == [bad]
    assert all(isinstance(p, str) and p for p in problem["details"][bad])
    assert (await list_experiments(client))["meta"]["total"] == 0


async def test_create_lists_every_problem_at_once(client: TestClient) -> None:
    body = {"experiment": {"name": "", "config": [], "tags": [1], "color": "red"}}
    problem = await error(client, "POST", EXPERIMENTS, 422, "validation_error", json=body)
    assert set(problem["details"]) == {"name", "config", "tags", "color"}
    assert problem["details"]["name"] == ["can't be blank"]


async def test_malformed_json_is_400(client: TestClient) -> None:
    await error(
        client,
        "POST",
        EXPERIMENTS,
        400,
        "bad_request",
        data=b'{"experiment": {"name": "a"',
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([{"name": "a"}], "body"),
        ("name", "body"),
        ({"name": "a"}, "experiment"),
        ({"experiment": "a"}, "experiment"),
        ({"experiment": {"name": "a"}, "extra": 1}, "extra"),
    ],
)
async def test_a_body_that_is_not_a_wrapped_object_is_422(client: TestClient, body: Any, field: str) -> None:
    problem = await error(client, "POST", EXPERIMENTS, 422, "validation_error", json=body)
    assert field in problem["details"]


# -- update and delete ---------------------------------------------------------------------------


async def test_patch_changes_name_description_and_tags_only(client: TestClient) -> None:
    created = await create_experiment(client, "Before", description="d", config=CONFIG, tags=["a"])
    changes = {"name": "After", "description": "new", "tags": ["b", "c"]}
    updated = (await call(client, "PATCH", f"{EXPERIMENTS}/{created['id']}", 200, json={"experiment": changes}))["data"]
    assert {k: updated[k] for k in changes} == changes
    assert updated["config"] == CONFIG and updated["status"] == "pending"
    assert updated["created_at"] == created["created_at"]
    assert parse_time(updated["updated_at"]) > parse_time(created["updated_at"])
    assert await get_experiment(client, created["id"]) == updated


async def test_config_may_change_while_pending(client: TestClient) -> None:
    created = await create_experiment(client, config={"a": 1})
    body = {"experiment": {"config": {"a": 2}}}
    updated = (await call(client, "PATCH", f"{EXPERIMENTS}/{created['id']}", 200, json=body))["data"]
    assert updated["config"] == {"a": 2}


@pytest.mark.parametrize("status", ["running", "paused", "cancelled"])
async def test_config_change_after_pending_is_409(client: TestClient, status: str) -> None:
    experiment = await experiment_in_status(client, status)
    body = {"experiment": {"config": {"a": 2}}}
    problem = await error(client, "PATCH", f"{EXPERIMENTS}/{experiment['id']}", 409, "conflict", json=body)
    assert status in problem["message"]
    assert (await get_experiment(client, experiment["id"]))["config"] == {}


async def test_name_may_change_after_pending(client: TestClient) -> None:
    experiment = await experiment_in_status(client, "running")
    body = {"experiment": {"name": "renamed", "tags": ["x"]}}
    updated = (await call(client, "PATCH", f"{EXPERIMENTS}/{experiment['id']}", 200, json=body))["data"]
    assert (updated["name"], updated["tags"], updated["status"]) == ("renamed", ["x"], "running")


@pytest.mark.parametrize(
    ("fields", "bad"),
    [({"name": ""}, "name"), ({"name": None}, "name"), ({"tags": [""]}, "tags"), ({"status": "running"}, "status")],
)
async def test_patch_refuses_bad_fields(client: TestClient, fields: Any, bad: str) -> None:
    experiment = await create_experiment(client)
    path = f"{EXPERIMENTS}/{experiment['id']}"
    problem = await error(client, "PATCH", path, 422, "validation_error", json={"experiment": fields})
    assert list(problem["details"]) == [bad]
    assert await get_experiment(client, experiment["id"]) == experiment


async def test_delete_answers_204_and_then_the_experiment_is_gone(client: TestClient) -> None:
    experiment = await create_experiment(client)
    path = f"{EXPERIMENTS}/{experiment['id']}"
    answer = await client.delete(path)
    assert answer.status == 204
    assert await answer.read() == b""
    await error(client, "GET", path, 404, "not_found")
    await error(client, "DELETE", path, 404, "not_found")
    await error(client, "PATCH", path, 404, "not_found", json={"experiment": {"name": "x"}})
    await error(client, "POST", f"{path}/start", 404, "not_found")
    assert (await list_experiments(client))["meta"]["total"] == 0


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"experiment": {"name": "x"}}),
        ("DELETE", "", None),
        ("POST", "/start", None),
        ("POST", "/cancel", None),
        ("POST", "/clone", None),
        ("GET", "/history", None),
    ],
)
async def test_unknown_id_is_404_not_found(client: TestClient, method: str, suffix: str, body: Any) -> None:
    problem = await error(client, method, f"{EXPERIMENTS}/exp_000000000000{suffix}", 404, "not_found", json=body)
    assert "exp_000000000000" in problem["message"]


@pytest.mark.parametrize(("method", "suffix", "status"), [("POST", "/archive", 404), ("PUT", "", 405)])
async def test_unknown_routes_answer_in_the_error_shape(
    client: TestClient, method: str, suffix: str, status: int
) -> None:
    experiment = await create_experiment(client)
    code = {404: "not_found", 405: "method_not_allowed"}[status]
    await error(client, method, f"{EXPERIMENTS}/{experiment['id']}{suffix}", status, code, json={})


# -- actions -------------------------------------------------------------------------------------


async def test_actions_walk_the_statuses_and_set_started_and_completed_at(client: TestClient) -> None:
    experiment = await create_experiment(client)
    started = (await act(client, experiment["id"], "start"))["data"]
    assert started["status"] == "running"
    assert started["started_at"] is not None and started["completed_at"] is None
    assert started["updated_at"] == started["started_at"]

    paused = (await act(client, experiment["id"], "pause"))["data"]
    assert paused["status"] == "paused" and paused["started_at"] == started["started_at"]

    resumed = (await act(client, experiment["id"], "resume"))["data"]
    assert resumed["status"] == "running" and resumed["started_at"] == started["started_at"]

    cancelled = (await act(client, experiment["id"], "cancel"))["data"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["completed_at"] is not None
    assert parse_time(cancelled["completed_at"]) > parse_time(started["started_at"])
    assert await get_experiment(client, experiment["id"]) == cancelled


@pytest.mark.parametrize("status", ["pending", "running", "paused"])
async def test_cancel_works_from_every_live_status(client: TestClient, status: str) -> None:
    experiment = await experiment_in_status(client, status)
    cancelled = (await act(client, experiment["id"], "cancel"))["data"]
    assert cancelled["status"] == "cancelled" and cancelled["completed_at"] is not None


@pytest.mark.parametrize(
    ("status", "action"),
    [
        ("pending", "pause"),
        ("pending", "resume"),
        ("running", "start"),
        ("running", "resume"),
        ("paused", "start"),
        ("paused", "pause"),
        ("cancelled", "start"),
        ("cancelled", "pause"),
        ("cancelled", "resume"),
        ("cancelled", "cancel"),
    ],
)
async def test_a_disallowed_action_is_409_naming_the_status(client: TestClient, status: str, action: str) -> None:
    experiment = await experiment_in_status(client, status)
    problem = await error(client, "POST", f"{EXPERIMENTS}/{experiment['id']}/{action}", 409, "conflict")
    assert f"status is {status}" in problem["message"]
    assert await get_experiment(client, experiment["id"]) == experiment
    events_so_far = {"pending": 1, "running": 2, "paused": 3, "cancelled": 2}[status]
    assert (await history(client, f"{EXPERIMENTS}/{experiment['id']}"))["meta"]["total"] == events_so_far


async def test_concurrent_starts_one_wins_the_other_is_409(client: TestClient) -> None:
    experiment = await create_experiment(client)
    answers = await asyncio.gather(*(client.post(f"{EXPERIMENTS}/{experiment['id']}/start") for _ in range(5)))
    assert sorted(a.status for a in answers) == [200, 409, 409, 409, 409]
    assert (await history(client, f"{EXPERIMENTS}/{experiment['id']}"))["meta"]["total"] == 2


async def test_an_action_with_a_malformed_body_is_400(client: TestClient) -> None:
    experiment = await create_experiment(client)
    start = f"{EXPERIMENTS}/{experiment['id']}/start"
    await error(client, "POST", start, 400, "bad_request", data=b"{nope", headers={"Content-Type": "application/json"})
    assert (await get_experiment(client, experiment["id"]))["status"] == "pending"


async def test_an_action_with_unknown_fields_is_422(client: TestClient) -> None:
    experiment = await create_experiment(client)
    path = f"{EXPERIMENTS}/{experiment['id']}/start"
    problem = await error(client, "POST", path, 422, "validation_error", json={"force": True})
    assert "force" in problem["details"]


# -- clone ---------------------------------------------------------------------------------------


async def test_clone_makes_a_pending_copy_named_copy(client: TestClient) -> None:
    source = await experiment_in_status(client, "running", name="Base")
    await call(
        client,
        "PATCH",
        f"{EXPERIMENTS}/{source['id']}",
        200,
        json={"experiment": {"tags": ["t1", "t2"], "description": "desc"}},
    )
    source = await get_experiment(client, source["id"])

    clone = (await call(client, "POST", f"{EXPERIMENTS}/{source['id']}/clone", 201))["data"]

    assert clone["id"] != source["id"]
    assert clone["name"] == "Base (copy)"
    assert (clone["config"], clone["tags"]) == (source["config"], source["tags"])
    assert clone["status"] == "pending"
    assert clone["started_at"] is None and clone["completed_at"] is None
    assert clone["cloned_from"] == source["id"]
    assert await get_experiment(client, clone["id"]) == clone
    assert (await get_experiment(client, source["id"]))["status"] == "running"


@pytest.mark.parametrize("body", [{"name": "Named clone"}, {"experiment": {"name": "Named clone"}}])
async def test_clone_takes_its_name_from_the_body(client: TestClient, body: Any) -> None:
    source = await create_experiment(client, "Base", config=CONFIG, tags=["x"])
    clone = (await call(client, "POST", f"{EXPERIMENTS}/{source['id']}/clone", 201, json=body))["data"]
    assert (clone["name"], clone["config"], clone["tags"]) == ("Named clone", CONFIG, ["x"])


async def test_the_default_clone_name_is_cut_to_255_characters(client: TestClient) -> None:
    source = await create_experiment(client, "n" * 255)
    clone = (await call(client, "POST", f"{EXPERIMENTS}/{source['id']}/clone", 201))["data"]
    assert clone["name"] == "n" * 255


@pytest.mark.parametrize(
    ("body", "field"), [({"name": ""}, "name"), ({"title": "x"}, "title"), ({"name": "x" * 256}, "name")]
)
async def test_clone_refuses_bad_bodies(client: TestClient, body: Any, field: str) -> None:
    source = await create_experiment(client)
    problem = await error(client, "POST", f"{EXPERIMENTS}/{source['id']}/clone", 422, "validation_error", json=body)
    assert field in problem["details"]
    assert (await list_experiments(client))["meta"]["total"] == 1


async def test_editing_a_clone_leaves_its_source_alone(client: TestClient) -> None:
    source = await create_experiment(client, config={"a": 1}, tags=["x"])
    clone = (await call(client, "POST", f"{EXPERIMENTS}/{source['id']}/clone", 201))["data"]
    body = {"experiment": {"config": {"a": 2}, "tags": ["y"]}}
    await call(client, "PATCH", f"{EXPERIMENTS}/{clone['id']}", 200, json=body)
    assert await get_experiment(client, source["id"]) == source


# -- history and as_of ---------------------------------------------------------------------------


async def test_history_lists_every_event_oldest_first(client: TestClient) -> None:
    experiment = await create_experiment(client, "E", config={"a": 1})
    path = f"{EXPERIMENTS}/{experiment['id']}"
    await call(client, "PATCH", path, 200, json={"experiment": {"name": "F"}})
    await act(client, experiment["id"], "start")
    await act(client, experiment["id"], "cancel")

    body = await history(client, path)

    entries = body["data"]
    assert [e["type"] for e in entries] == [
        "ExperimentCreated",
        "ExperimentUpdated",
        "ExperimentStarted",
        "ExperimentCancelled",
    ]
    assert entries[0]["changes"]["name"] == "E" and entries[0]["changes"]["config"] == {"a": 1}
    assert entries[1]["changes"] == {"name": "F"}
    assert entries[2]["changes"] == {}
    assert [e["offset"] for e in entries] == sorted(e["offset"] for e in entries)
    assert entries[0]["at"] == experiment["created_at"]
    assert len({e["actor"] for e in entries}) == 1 and entries[0]["actor"]
    assert body["meta"]["total"] == 4 and body["meta"]["has_more"] is False


async def test_history_pages(client: TestClient) -> None:
    experiment = await create_experiment(client)
    path = f"{EXPERIMENTS}/{experiment['id']}"
    for i in range(4):
        await call(client, "PATCH", path, 200, json={"experiment": {"description": str(i)}})
    first = await history(client, path, per_page=2)
    third = await history(client, path, per_page=2, page=3)
    assert len(first["data"]) == 2 and first["meta"]["has_more"] is True and first["meta"]["total"] == 5
    assert [e["changes"] for e in third["data"]] == [{"description": "3"}]
    assert third["meta"]["has_more"] is False


async def test_history_survives_delete(client: TestClient) -> None:
    experiment = await create_experiment(client)
    path = f"{EXPERIMENTS}/{experiment['id']}"
    await call(client, "DELETE", path, 204)
    assert [e["type"] for e in (await history(client, path))["data"]] == ["ExperimentCreated", "ExperimentDeleted"]


async def test_as_of_returns_the_state_at_that_instant(client: TestClient) -> None:
    experiment = await create_experiment(client, "Original", config={"a": 1})
    path = f"{EXPERIMENTS}/{experiment['id']}"
    await call(client, "PATCH", path, 200, json={"experiment": {"name": "Renamed"}})
    await act(client, experiment["id"], "start")
    created_at, renamed_at, started_at = (e["at"] for e in (await history(client, path))["data"])

    at_creation = await get_experiment(client, experiment["id"], as_of=created_at)
    assert at_creation == experiment
    between = parse_time(started_at) - (parse_time(started_at) - parse_time(renamed_at)) / 2
    renamed = await get_experiment(client, experiment["id"], as_of=between.isoformat())
    assert (renamed["name"], renamed["status"], renamed["started_at"]) == ("Renamed", "pending", None)
    now = await get_experiment(client, experiment["id"], as_of=dt.datetime.now(dt.UTC).isoformat())
    assert now == await get_experiment(client, experiment["id"])
    assert now["status"] == "running"


async def test_as_of_accepts_z_and_naive_utc_times(client: TestClient) -> None:
    experiment = await create_experiment(client)
    later = parse_time(experiment["created_at"]) + dt.timedelta(seconds=1)
    for text in (later.isoformat().replace("+00:00", "Z"), later.replace(tzinfo=None).isoformat()):
        assert (await get_experiment(client, experiment["id"], as_of=text))["id"] == experiment["id"]


async def test_as_of_before_creation_or_after_delete_is_404(client: TestClient) -> None:
    experiment = await create_experiment(client)
    path = f"{EXPERIMENTS}/{experiment['id']}"
    before = (parse_time(experiment["created_at"]) - dt.timedelta(seconds=1)).isoformat()
    await error(client, "GET", path, 404, "not_found", params={"as_of": before})
    await call(client, "DELETE", path, 204)
    after = dt.datetime.now(dt.UTC).isoformat()
    await error(client, "GET", path, 404, "not_found", params={"as_of": after})
    # Before its delete it is still visible in the past.
    assert (await get_experiment(client, experiment["id"], as_of=experiment["created_at"]))["id"] == experiment["id"]


async def test_a_bad_as_of_is_422(client: TestClient) -> None:
    experiment = await create_experiment(client)
    problem = await error(
        client, "GET", f"{EXPERIMENTS}/{experiment['id']}", 422, "validation_error", params={"as_of": "yesterday"}
    )
    assert "as_of" in problem["details"]


async def test_an_unknown_parameter_of_get_is_422(client: TestClient) -> None:
    experiment = await create_experiment(client)
    problem = await error(
        client,
        "GET",
        f"{EXPERIMENTS}/{experiment['id']}",
        422,
        "validation_error",
        params={"asof": experiment["created_at"]},
    )
    assert "asof" in problem["details"]


async def test_an_unknown_parameter_of_history_is_422(client: TestClient) -> None:
    experiment = await create_experiment(client)
    problem = await error(
        client, "GET", f"{EXPERIMENTS}/{experiment['id']}/history", 422, "validation_error", params={"sort": "at"}
    )
    assert "sort" in problem["details"]


# -- lists: filters, sorts, pages ----------------------------------------------------------------


async def test_the_list_is_newest_first_with_meta(client: TestClient) -> None:
    created = [await create_experiment(client, f"E{i}") for i in range(3)]
    body = await list_experiments(client)
    assert ids(body["data"]) == ids(created)[::-1]
    assert body["meta"] == {"total": 3, "page": 1, "per_page": 25, "next_cursor": None, "has_more": False}
    assert set(body["data"][0]) == DETAIL_FIELDS - {"progress", "runs", "results_summary"}


async def test_the_default_page_is_25(client: TestClient) -> None:
    for i in range(27):
        await create_experiment(client, f"E{i}")
    body = await list_experiments(client)
    assert len(body["data"]) == 25
    assert body["meta"]["total"] == 27 and body["meta"]["has_more"] is True and body["meta"]["next_cursor"]


async def test_page_and_per_page(client: TestClient) -> None:
    created = [await create_experiment(client, f"E{i}") for i in range(7)]
    newest_first = ids(created)[::-1]
    pages = [await list_experiments(client, per_page=3, page=page) for page in (1, 2, 3, 4)]
    assert [ids(p["data"]) for p in pages] == [newest_first[0:3], newest_first[3:6], newest_first[6:], []]
    assert [p["meta"]["has_more"] for p in pages] == [True, True, False, False]
    assert all(p["meta"]["total"] == 7 and p["meta"]["page"] == n for n, p in enumerate(pages, start=1))
    assert len((await list_experiments(client, per_page=100))["data"]) == 7


async def test_filter_by_status(client: TestClient) -> None:
    statuses = ["pending", "running", "paused", "cancelled", "running"]
    created = [await experiment_in_status(client, status) for status in statuses]
    for status in ("pending", "running", "paused", "cancelled", "completed"):
        body = await list_experiments(client, **{"filter[status]": status})
        expected = {e["id"] for e in created if e["status"] == status}
        assert set(ids(body["data"])) == expected
        assert body["meta"]["total"] == len(expected)


async def test_filter_by_name_is_a_case_insensitive_part(client: TestClient) -> None:
    names = ["Ensemble Comparison v1", "ENSEMBLE v2", "Baseline", "my ensemble"]
    created = {name: await create_experiment(client, name) for name in names}
    body = await list_experiments(client, **{"filter[name]": "enSEMble"})
    assert set(ids(body["data"])) == {created[n]["id"] for n in names if "ensemble" in n.lower()}
    assert (await list_experiments(client, **{"filter[name]": "nothing"}))["data"] == []


async def test_filter_by_tag(client: TestClient) -> None:
    tagged = await create_experiment(client, "A", tags=["nlp", "ensemble"])
    await create_experiment(client, "B", tags=["vision"])
    await create_experiment(client, "C", tags=["nlp-extra"])
    body = await list_experiments(client, **{"filter[tag]": "nlp"})
    assert ids(body["data"]) == [tagged["id"]]


async def test_filter_by_creation_time(client: TestClient) -> None:
    first, second, third = [await create_experiment(client, f"E{i}") for i in range(3)]
    after = await list_experiments(client, **{"filter[created_after]": second["created_at"]})
    before = await list_experiments(client, **{"filter[created_before]": second["created_at"]})
    both = await list_experiments(
        client, **{"filter[created_after]": first["created_at"], "filter[created_before]": third["created_at"]}
    )
    assert ids(after["data"]) == [third["id"]]
    assert ids(before["data"]) == [first["id"]]
    assert ids(both["data"]) == [second["id"]]


async def test_filters_combine(client: TestClient) -> None:
    wanted = await experiment_in_status(client, "running", name="Ensemble A")
    await experiment_in_status(client, "pending", name="Ensemble B")
    await experiment_in_status(client, "running", name="Baseline")
    body = await list_experiments(client, **{"filter[status]": "running", "filter[name]": "ensemble"})
    assert ids(body["data"]) == [wanted["id"]] and body["meta"]["total"] == 1


@pytest.mark.parametrize("descending", [False, True])
async def test_sort_by_name_ignores_case(client: TestClient, descending: bool) -> None:
    names = ["banana", "Apple", "cherry", "apple pie", "Banana split"]
    created = [await create_experiment(client, name) for name in names]
    expected = sorted(created, key=lambda e: (e["name"].casefold(), e["id"]), reverse=descending)
    body = await list_experiments(client, sort=("-" if descending else "") + "name")
    assert ids(body["data"]) == ids(expected)


@pytest.mark.parametrize("descending", [False, True])
async def test_sort_by_status(client: TestClient, descending: bool) -> None:
    created = [await experiment_in_status(client, s) for s in ["running", "pending", "cancelled", "paused", "pending"]]
    expected = sorted(created, key=lambda e: (e["status"], e["id"]), reverse=descending)
    body = await list_experiments(client, sort=("-" if descending else "") + "status")
    assert ids(body["data"]) == ids(expected)


async def test_sort_by_created_and_updated_at(client: TestClient) -> None:
    first, second, third = [await create_experiment(client, f"E{i}") for i in range(3)]
    await call(client, "PATCH", f"{EXPERIMENTS}/{first['id']}", 200, json={"experiment": {"description": "touched"}})
    assert ids((await list_experiments(client, sort="created_at"))["data"]) == ids([first, second, third])
    assert ids((await list_experiments(client, sort="-updated_at"))["data"]) == ids([first, third, second])
    assert ids((await list_experiments(client, sort="updated_at"))["data"]) == ids([second, third, first])


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "name", "-name", "status", "-updated_at"])
async def test_the_cursor_walks_every_experiment_once_in_order(client: TestClient, sort: str) -> None:
    rng = random.Random(3)
    for i in range(23):
        experiment = await create_experiment(client, rng.choice(["alpha", "Beta", "gamma", "delta"]) + str(i % 4))
        if i % 3 == 0:
            await act(client, experiment["id"], "start")
    everything = (await list_experiments(client, sort=sort, per_page=100))["data"]
    walked = await walk_with_cursor(client, EXPERIMENTS, sort=sort, per_page=4)
    assert ids(walked) == ids(everything)
    assert len(walked) == 23


async def test_the_cursor_walks_a_filtered_list(client: TestClient) -> None:
    for i in range(12):
        await create_experiment(client, f"{'keep' if i % 2 else 'drop'} {i}")
    walked = await walk_with_cursor(client, EXPERIMENTS, per_page=2, **{"filter[name]": "keep"})
    assert [e["name"] for e in walked] == [f"keep {i}" for i in range(11, 0, -2)]


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "name"])
async def test_the_cursor_stays_correct_while_experiments_are_created(client: TestClient, sort: str) -> None:
    rng = random.Random(11)

    def name() -> str:
        return "".join(rng.choice("abcdefghij") for _ in range(6))

    before = [await create_experiment(client, name()) for _ in range(40)]
    added: list[dict[str, Any]] = []
    # Between every two pages an experiment is created: new rows land before, inside and
    # after the pages already read, depending on the sort.
    body = await list_experiments(client, sort=sort, per_page=3)
    walked = list(body["data"])
    while body["meta"]["has_more"]:
        added.append(await create_experiment(client, name()))
        body = await list_experiments(client, sort=sort, per_page=3, cursor=body["meta"]["next_cursor"])
        walked.extend(body["data"])

    assert len(added) >= 5
    walked_ids = ids(walked)
    assert len(walked_ids) == len(set(walked_ids)), "an experiment appeared twice"
    assert set(ids(before)) <= set(walked_ids), "an experiment that existed before the walk was skipped"
    assert set(walked_ids) <= set(ids(before)) | set(ids(added))


@pytest.mark.parametrize(
    ("params", "parameter", "named"),
    [
        ({"filter[owner]": "me"}, "filter[owner]", "created_after, created_before, name, status, tag"),
        ({"filter[status]": "done"}, "filter[status]", "cancelled, completed, failed, paused, pending, running"),
        ({"filter[created_after]": "last week"}, "filter[created_after]", "ISO 8601"),
        ({"filter[created_before]": "2024-13-01"}, "filter[created_before]", "ISO 8601"),
        ({"sort": "priority"}, "sort", "-created_at, -name, -status, -updated_at, created_at, name, status"),
        ({"order": "asc"}, "order", "cursor, page, per_page, sort"),
        ({"per_page": "101"}, "per_page", "between 1 and 100"),
        ({"per_page": "0"}, "per_page", "between 1 and 100"),
        ({"page": "0"}, "page", "at least 1"),
        ({"page": "two"}, "page", "integer"),
        ({"cursor": "not-a-cursor"}, "cursor", "cursor"),
        ({"cursor": "bm9wZQ"}, "cursor", "cursor"),
        ({"cursor": "WzEsMiwzLDRd"}, "cursor", "cursor"),
    ],
)
async def test_bad_list_parameters_are_422_naming_the_allowed_values(
    client: TestClient, params: dict[str, str], parameter: str, named: str
) -> None:
    problem = await error(client, "GET", EXPERIMENTS, 422, "validation_error", params=params)
    assert list(problem["details"]) == [parameter]
    assert named in problem["details"][parameter][0]
    assert parameter in problem["message"]


async def test_a_cursor_is_tied_to_its_sort(client: TestClient) -> None:
    for i in range(3):
        await create_experiment(client, f"E{i}")
    cursor = (await list_experiments(client, per_page=1, sort="name"))["meta"]["next_cursor"]
    problem = await error(client, "GET", EXPERIMENTS, 422, "validation_error", params={"cursor": cursor})
    assert "cursor" in problem["details"]


# -- Idempotency-Key -----------------------------------------------------------------------------


async def test_a_retried_create_returns_the_first_answer_and_creates_nothing(client: TestClient) -> None:
    body = {"experiment": {"name": "Once", "config": CONFIG}}
    first = await client.post(EXPERIMENTS, json=body, headers=idempotency("create-1"))
    retry = await client.post(EXPERIMENTS, json=body, headers=idempotency("create-1"))

    assert (first.status, retry.status) == (201, 201)
    assert await retry.json() == await first.json()
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert (await list_experiments(client))["meta"]["total"] == 1


async def test_a_retry_answers_as_of_the_first_request_even_after_later_changes(client: TestClient) -> None:
    body = {"experiment": {"name": "Original"}}
    first = await call(client, "POST", EXPERIMENTS, 201, json=body, headers=idempotency("k"))
    experiment_id = first["data"]["id"]
    await call(client, "PATCH", f"{EXPERIMENTS}/{experiment_id}", 200, json={"experiment": {"name": "Changed"}})
    retry = await call(client, "POST", EXPERIMENTS, 201, json=body, headers=idempotency("k"))
    assert retry == first


async def test_the_same_key_with_another_body_is_422(client: TestClient) -> None:
    await call(client, "POST", EXPERIMENTS, 201, json={"experiment": {"name": "A"}}, headers=idempotency("k"))
    problem = await error(
        client,
        "POST",
        EXPERIMENTS,
        422,
        "validation_error",
        json={"experiment": {"name": "B"}},
        headers=idempotency("k"),
    )
    assert "Idempotency-Key" in problem["details"]
    assert (await list_experiments(client))["meta"]["total"] == 1


async def test_the_same_key_on_another_endpoint_is_422(client: TestClient) -> None:
    experiment = await create_experiment(client)
    await act(client, experiment["id"], "start", headers=idempotency("k"))
    await error(
        client, "POST", f"{EXPERIMENTS}/{experiment['id']}/pause", 422, "validation_error", headers=idempotency("k")
    )
    assert (await get_experiment(client, experiment["id"]))["status"] == "running"


async def test_a_retried_action_replays_instead_of_conflicting(client: TestClient) -> None:
    experiment = await create_experiment(client)
    path = f"{EXPERIMENTS}/{experiment['id']}"
    first = await client.post(f"{path}/start", headers=idempotency("start-1"))
    retry = await client.post(f"{path}/start", headers=idempotency("start-1"))
    assert (first.status, retry.status) == (200, 200)
    assert await retry.json() == await first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert (await history(client, path))["meta"]["total"] == 2
    await error(client, "POST", f"{path}/start", 409, "conflict", headers=idempotency("start-2"))


async def test_a_retried_patch_appends_nothing(client: TestClient) -> None:
    experiment = await create_experiment(client)
    path = f"{EXPERIMENTS}/{experiment['id']}"
    body = {"experiment": {"description": "once"}}
    first = await call(client, "PATCH", path, 200, json=body, headers=idempotency("p"))
    retry = await call(client, "PATCH", path, 200, json=body, headers=idempotency("p"))
    assert retry == first
    assert (await history(client, path))["meta"]["total"] == 2


async def test_a_retried_clone_makes_one_clone(client: TestClient) -> None:
    source = await create_experiment(client)
    path = f"{EXPERIMENTS}/{source['id']}/clone"
    first = await call(client, "POST", path, 201, json={"name": "C"}, headers=idempotency("c"))
    retry = await call(client, "POST", path, 201, json={"name": "C"}, headers=idempotency("c"))
    assert retry == first
    assert (await list_experiments(client))["meta"]["total"] == 2


async def test_a_retried_clone_replays_after_its_source_was_deleted(client: TestClient) -> None:
    source = await create_experiment(client)
    path = f"{EXPERIMENTS}/{source['id']}/clone"
    first = await call(client, "POST", path, 201, headers=idempotency("c"))
    await call(client, "DELETE", f"{EXPERIMENTS}/{source['id']}", 204)
    retry = await call(client, "POST", path, 201, headers=idempotency("c"))
    assert retry == first


async def test_concurrent_posts_with_one_key_create_one_experiment(client: TestClient) -> None:
    body = {"experiment": {"name": "Raced"}}
    answers = await asyncio.gather(
        *(client.post(EXPERIMENTS, json=body, headers=idempotency("race")) for _ in range(8))
    )
    assert [a.status for a in answers] == [201] * 8
    bodies = [await a.json() for a in answers]
    assert all(b == bodies[0] for b in bodies)
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
    assert (await list_experiments(client))["meta"]["total"] == 1


async def test_a_key_whose_request_was_invalid_may_be_used_again(client: TestClient) -> None:
    await error(
        client,
        "POST",
        EXPERIMENTS,
        422,
        "validation_error",
        json={"experiment": {"name": ""}},
        headers=idempotency("k"),
    )
    await call(client, "POST", EXPERIMENTS, 201, json={"experiment": {"name": "ok"}}, headers=idempotency("k"))
    assert (await list_experiments(client))["meta"]["total"] == 1


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_idempotency_key_of_a_bad_length_is_422(client: TestClient, key: str) -> None:
    problem = await error(
        client,
        "POST",
        EXPERIMENTS,
        422,
        "validation_error",
        json={"experiment": {"name": "A"}},
        headers=idempotency(key),
    )
    assert "Idempotency-Key" in problem["details"]


# -- restart -------------------------------------------------------------------------------------


def projection(client: TestClient) -> bytes:
    """The projector's state as JSON: what a restart must rebuild identically."""
    state = client.app[PROJECTOR].state
    fields = ("experiments", "models", "api_keys", "model_ids_by_name", "histories", "requests", "position")
    return msgspec.json.encode(msgspec.to_builtins({name: getattr(state, name) for name in fields}))


async def test_a_restart_rebuilds_the_same_state(app_client: Any) -> None:
    client = await app_client()
    experiments = [await create_experiment(client, f"E{i}", config={"i": i}, tags=[str(i)]) for i in range(4)]
    await act(client, experiments[0]["id"], "start", headers=idempotency("s"))
    await act(client, experiments[0]["id"], "pause")
    await act(client, experiments[1]["id"], "cancel")
    await call(client, "PATCH", f"{EXPERIMENTS}/{experiments[2]['id']}", 200, json={"experiment": {"name": "Z"}})
    await call(client, "POST", f"{EXPERIMENTS}/{experiments[2]['id']}/clone", 201)
    await call(client, "DELETE", f"{EXPERIMENTS}/{experiments[3]['id']}", 204)
    gpt = await create_model(client, "GPT-4", provider="openai")
    await create_model(client, "Claude", provider="anthropic")
    await call(client, "PATCH", f"{MODELS}/{gpt['id']}", 200, json={"model": {"name": "GPT-4o"}})
    await call(client, "DELETE", f"{MODELS}/{gpt['id']}", 204)
    key = (
        await call(client, "POST", "/api/v1/api-keys", 201, json={"api_key": {"name": "reader", "scopes": ["read"]}})
    )["data"]
    await call(client, "DELETE", f"/api/v1/api-keys/{key['id']}", 204)
    lists_before = (await list_experiments(client))["data"]
    before = projection(client)
    await client.close()

    restarted = await app_client()

    assert projection(restarted) == before
    assert (await list_experiments(restarted))["data"] == lists_before
    retry = await act(restarted, experiments[0]["id"], "start", headers=idempotency("s"))
    assert retry["data"]["status"] == "running"  # the first answer, replayed after the restart
