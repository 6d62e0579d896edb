"""The pure fold of service/resources/fold.py: Resources.apply and Resources.check, with no app."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from schemas.resources import (
    ApiKeyCreated,
    ApiKeyRevoked,
    ExperimentCancelled,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentPaused,
    ExperimentResumed,
    ExperimentStarted,
    ExperimentUpdated,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    RateLimits,
    RequestRef,
)
from service.resources import fold as resources
from service.resources.fold import Resources

T0 = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.UTC)
_ids = itertools.count()


def envelope(seconds: float = 0, request: RequestRef | None = None) -> dict[str, Any]:
    return {
        "event_id": f"evt_{next(_ids)}",
        "at": T0 + dt.timedelta(seconds=seconds),
        "actor": "key_t",
        "request": request,
    }


class Folder:
    """A Resources state and the next log offset: apply events one after another."""

    def __init__(self, state: Resources | None = None) -> None:
        self.state = state or Resources()
        self.offset = 0

    def apply(self, event: Any) -> Any:
        rejection = self.state.apply(event, self.offset)
        self.offset += 1
        assert self.state.position == self.offset
        return rejection

    def accept(self, *events: Any) -> None:
        for event in events:
            rejection = self.apply(event)
            assert rejection is None, rejection


def created(experiment_id: str = "exp_1", seconds: float = 0, **fields: Any) -> ExperimentCreated:
    return ExperimentCreated(**envelope(seconds), experiment_id=experiment_id, name=fields.pop("name", "E"), **fields)


def model_created(model_id: str, name: str, seconds: float = 0) -> ModelCreated:
    return ModelCreated(**envelope(seconds), model_id=model_id, name=name)


@pytest.fixture
def fold() -> Folder:
    return Folder()


# -- experiments: transitions -------------------------------------------------------------------


def test_create_makes_a_pending_experiment(fold: Folder) -> None:
    fold.accept(created("exp_1", name="Ensemble", config={"k": 1}, tags=["a"]))
    experiment = fold.state.experiments["exp_1"]
    assert (experiment.name, experiment.status, experiment.config, experiment.tags) == (
        "Ensemble",
        "pending",
        {"k": 1},
        ["a"],
    )
    assert experiment.created_at == experiment.updated_at == T0
    assert experiment.started_at is None and experiment.completed_at is None
    assert experiment.created_by == "key_t"


def test_start_pause_resume_cancel_walk_the_statuses_and_set_the_times(fold: Folder) -> None:
    fold.accept(created("exp_1"))
    steps = [(ExperimentStarted, "running"), (ExperimentPaused, "paused"), (ExperimentResumed, "running")]
    for seconds, (event_type, status) in enumerate(steps, start=1):
        fold.accept(event_type(**envelope(seconds), experiment_id="exp_1"))
        experiment = fold.state.experiments["exp_1"]
        assert experiment.status == status
        assert experiment.updated_at == T0 + dt.timedelta(seconds=seconds)
        assert experiment.started_at == T0 + dt.timedelta(seconds=1)  # the first start, kept by resume
        assert experiment.completed_at is None
    fold.accept(ExperimentCancelled(**envelope(10), experiment_id="exp_1"))
    experiment = fold.state.experiments["exp_1"]
    assert experiment.status == "cancelled"
    assert experiment.completed_at == T0 + dt.timedelta(seconds=10)


def test_a_second_start_is_rejected_and_changes_nothing(fold: Folder) -> None:
    fold.accept(created("exp_1"), ExperimentStarted(**envelope(1), experiment_id="exp_1"))
    before = (fold.state.experiments["exp_1"].updated_at, len(fold.state.history("exp_1")))

    rejection = fold.apply(ExperimentStarted(**envelope(2), experiment_id="exp_1"))

    assert rejection is not None and rejection.code == "conflict"
    assert "running" in rejection.message
    assert (fold.state.experiments["exp_1"].updated_at, len(fold.state.history("exp_1"))) == before
    assert fold.state.position == 3  # the rejected event is passed over all the same


@pytest.mark.parametrize(
    ("event_type", "status"),
    [(ExperimentPaused, "pending"), (ExperimentResumed, "pending"), (ExperimentResumed, "running")],
)
def test_transitions_from_the_wrong_status_are_conflicts(fold: Folder, event_type: Any, status: str) -> None:
    fold.accept(created("exp_1"))
    if status == "running":
        fold.accept(ExperimentStarted(**envelope(1), experiment_id="exp_1"))
    rejection = fold.state.check(event_type(**envelope(2), experiment_id="exp_1"))
    assert rejection is not None and rejection.code == "conflict"
    assert f"its status is {status}" in rejection.message


@pytest.mark.parametrize("event_type", [ExperimentStarted, ExperimentPaused, ExperimentResumed, ExperimentCancelled])
def test_nothing_leaves_cancelled(fold: Folder, event_type: Any) -> None:
    fold.accept(created("exp_1"), ExperimentCancelled(**envelope(1), experiment_id="exp_1"))
    rejection = fold.state.check(event_type(**envelope(2), experiment_id="exp_1"))
    assert rejection is not None and rejection.code == "conflict"


@pytest.mark.parametrize(
    "event",
    [
        ExperimentStarted(**envelope(), experiment_id="exp_nope"),
        ExperimentUpdated(**envelope(), experiment_id="exp_nope", name="x"),
        ExperimentDeleted(**envelope(), experiment_id="exp_nope"),
    ],
)
def test_events_of_unknown_experiments_are_not_found(fold: Folder, event: Any) -> None:
    rejection = fold.apply(event)
    assert rejection is not None and rejection.code == "not_found"
    assert fold.state.history("exp_nope") == []


def test_config_changes_only_while_pending(fold: Folder) -> None:
    fold.accept(created("exp_1", config={"a": 1}))
    fold.accept(ExperimentUpdated(**envelope(1), experiment_id="exp_1", config={"a": 2}))
    assert fold.state.experiments["exp_1"].config == {"a": 2}
    fold.accept(ExperimentStarted(**envelope(2), experiment_id="exp_1"))

    rejection = fold.apply(ExperimentUpdated(**envelope(3), experiment_id="exp_1", config={"a": 3}))

    assert rejection is not None and rejection.code == "conflict"
    assert fold.state.experiments["exp_1"].config == {"a": 2}
    fold.accept(ExperimentUpdated(**envelope(4), experiment_id="exp_1", name="renamed", tags=["t"]))
    assert (fold.state.experiments["exp_1"].name, fold.state.experiments["exp_1"].tags) == ("renamed", ["t"])


def test_update_changes_only_the_fields_present(fold: Folder) -> None:
    fold.accept(created("exp_1", name="E", description="d", tags=["a"], config={"k": 1}))
    fold.accept(ExperimentUpdated(**envelope(5), experiment_id="exp_1", description="new"))
    experiment = fold.state.experiments["exp_1"]
    assert (experiment.name, experiment.description, experiment.tags, experiment.config) == (
        "E",
        "new",
        ["a"],
        {"k": 1},
    )
    assert experiment.updated_at == T0 + dt.timedelta(seconds=5)


def test_a_deleted_experiment_keeps_its_history_and_its_id(fold: Folder) -> None:
    fold.accept(created("exp_1"), ExperimentDeleted(**envelope(1), experiment_id="exp_1"))
    assert "exp_1" not in fold.state.experiments
    assert [type(a.event) for a in fold.state.history("exp_1")] == [ExperimentCreated, ExperimentDeleted]
    rejection = fold.apply(created("exp_1", seconds=2))
    assert rejection is not None and rejection.code == "conflict"


def test_replayed_is_the_state_as_of_an_offset(fold: Folder) -> None:
    fold.accept(created("exp_1"), created("exp_2"), ExperimentStarted(**envelope(1), experiment_id="exp_1"))
    past = fold.state.replayed("exp_1", lambda entry: entry.offset < 2)
    assert list(past.experiments) == ["exp_1"]
    assert past.experiments["exp_1"].status == "pending"
    assert fold.state.experiments["exp_1"].status == "running"


# -- Idempotency-Key: duplicate requests --------------------------------------------------------


def test_a_second_event_of_one_request_is_a_duplicate_and_is_not_applied(fold: Folder) -> None:
    ref = RequestRef("key_t:abc", "fingerprint-1")
    fold.accept(ExperimentCreated(**envelope(0, ref), experiment_id="exp_1", name="E"))

    rejection = fold.apply(ExperimentCreated(**envelope(1, ref), experiment_id="exp_2", name="E"))

    assert rejection is not None and rejection.code == "duplicate"
    assert rejection.first is not None
    assert (rejection.first.offset, rejection.first.resource_id, rejection.first.fingerprint) == (
        0,
        "exp_1",
        "fingerprint-1",
    )
    assert rejection.first.rejection is None
    assert list(fold.state.experiments) == ["exp_1"]
    assert fold.state.history("exp_2") == []
    assert fold.state.requests["key_t:abc"].offset == 0  # the first event stays the answer


def test_a_request_whose_event_was_rejected_is_remembered_with_its_rejection(fold: Folder) -> None:
    ref = RequestRef("key_t:start", "fp")
    fold.accept(created("exp_1"), ExperimentStarted(**envelope(1), experiment_id="exp_1"))
    first = fold.apply(ExperimentStarted(**envelope(2, ref), experiment_id="exp_1"))
    assert first is not None and first.code == "conflict"

    again = fold.state.check(ExperimentStarted(**envelope(3, ref), experiment_id="exp_1"))

    assert again is not None and again.code == "duplicate"
    assert again.first is not None and again.first.rejection == first


def test_request_keys_are_forgotten_after_the_ttl() -> None:
    fold = Folder(Resources(idempotency_ttl=dt.timedelta(hours=1)))
    ref = RequestRef("key_t:old", "fp")
    fold.accept(ExperimentCreated(**envelope(0, ref), experiment_id="exp_1", name="E"))
    fold.accept(ExperimentCreated(**envelope(7200, RequestRef("key_t:new", "fp")), experiment_id="exp_2", name="E"))
    assert "key_t:old" not in fold.state.requests
    assert fold.state.check(ExperimentCreated(**envelope(7201, ref), experiment_id="exp_3", name="E")) is None


# -- models: unique names -----------------------------------------------------------------------


def test_model_names_are_unique_ignoring_case(fold: Folder) -> None:
    fold.accept(model_created("model_1", "GPT-4"))
    rejection = fold.apply(model_created("model_2", "gpt-4"))
    assert rejection is not None and rejection.code == "conflict"
    assert "model_2" not in fold.state.models
    assert fold.state.model_named("GPT-4").id == "model_1"  # type: ignore[union-attr]


def test_a_rename_frees_the_old_name_and_takes_the_new_one(fold: Folder) -> None:
    fold.accept(model_created("model_1", "GPT-4"), model_created("model_2", "Claude"))
    fold.accept(ModelUpdated(**envelope(1), model_id="model_1", name="GPT-4o"))

    assert fold.state.model_ids_by_name == {"gpt-4o": "model_1", "claude": "model_2"}
    taken = fold.apply(ModelUpdated(**envelope(2), model_id="model_2", name="gpt-4O"))
    assert taken is not None and taken.code == "conflict"
    fold.accept(model_created("model_3", "gpt-4"))  # the old name is free again


def test_a_model_may_be_renamed_to_its_own_name_in_another_case(fold: Folder) -> None:
    fold.accept(model_created("model_1", "gpt-4"), ModelUpdated(**envelope(1), model_id="model_1", name="GPT-4"))
    assert fold.state.models["model_1"].name == "GPT-4"
    assert fold.state.model_ids_by_name == {"gpt-4": "model_1"}


def test_deleting_a_model_frees_its_name_but_not_its_id(fold: Folder) -> None:
    fold.accept(model_created("model_1", "GPT-4"), ModelDeleted(**envelope(1), model_id="model_1"))
    assert fold.state.model_ids_by_name == {}
    fold.accept(model_created("model_2", "gpt-4"))
    assert fold.state.model_named("GPT-4").id == "model_2"  # type: ignore[union-attr]
    reused = fold.apply(model_created("model_1", "other"))
    assert reused is not None and reused.code == "conflict"


def test_events_of_unknown_models_are_not_found(fold: Folder) -> None:
    for event in (
        ModelUpdated(**envelope(), model_id="model_x", name="n"),
        ModelDeleted(**envelope(), model_id="model_x"),
    ):
        rejection = fold.apply(event)
        assert rejection is not None and rejection.code == "not_found"


# -- API keys: somebody must stay able to manage them -------------------------------------------


def key_created(key_id: str, *scopes: str) -> ApiKeyCreated:
    return ApiKeyCreated(
        **envelope(), key_id=key_id, name=key_id, scopes=list(scopes), secret_sha256="0" * 64, rate_limits=RateLimits()
    )


def key_revoked(key_id: str, keep_an_admin: bool = True) -> ApiKeyRevoked:
    return ApiKeyRevoked(**envelope(1), key_id=key_id, keep_an_admin=keep_an_admin)


def test_the_last_active_admin_key_cannot_be_revoked(fold: Folder) -> None:
    fold.accept(key_created("key_admin", "admin"), key_created("key_reader", "read"), key_revoked("key_reader"))
    rejection = fold.apply(key_revoked("key_admin"))
    assert rejection is not None and rejection.code == "conflict"
    assert "last active admin key" in rejection.message
    assert fold.state.api_keys["key_admin"].revoked_at is None


def test_of_two_racing_revocations_of_the_last_two_admin_keys_the_log_keeps_the_first(fold: Folder) -> None:
    fold.accept(key_created("key_a", "admin"), key_created("key_b", "read", "admin"))
    # Both were checked against the same state by their handlers (maybe in two processes)...
    first, second = key_revoked("key_a"), key_revoked("key_b")
    assert fold.state.check(first) is None and fold.state.check(second) is None
    # ...and the log's order decides: the second would lock everyone out.
    assert fold.apply(first) is None
    rejection = fold.apply(second)
    assert rejection is not None and rejection.code == "conflict"
    assert fold.state.active_admin_keys() == {"key_b"}


def test_revocations_logged_before_the_rule_still_apply_on_replay(fold: Folder) -> None:
    fold.accept(key_created("key_only", "admin"))
    assert fold.apply(key_revoked("key_only", keep_an_admin=False)) is None  # never resurrected
    assert fold.state.api_keys["key_only"].revoked_at is not None
    decoded = resources.event_decoder.decode(
        b'{"event": "ApiKeyRevoked", "event_id": "e", "at": "2024-01-15T10:00:00Z", "key_id": "k"}'
    )
    assert isinstance(decoded, ApiKeyRevoked) and decoded.keep_an_admin is False


def test_an_admin_key_may_be_revoked_while_another_one_remains(fold: Folder) -> None:
    fold.accept(key_created("key_a", "admin"), key_created("key_b", "admin"), key_revoked("key_a"))
    assert fold.state.active_admin_keys() == {"key_b"}


async def test_a_fold_that_fails_on_one_event_skips_it_and_goes_on(client: Any, monkeypatch: Any) -> None:
    """A bug applying one event answers 500 for it; the projector keeps folding what follows."""

    def broken(state: Resources, event: Any) -> None:
        raise RuntimeError("a bug in the fold")

    monkeypatch.setitem(resources._APPLY, ModelCreated, broken)
    answer = await client.post("/api/v1/models", json={"model": {"name": "m"}})
    assert answer.status == 500 and (await answer.json())["error"]["code"] == "internal_error"
    answer = await client.post("/api/v1/experiments", json={"experiment": {"name": "after the bug"}})
    assert answer.status == 201, await answer.text()
