"""Resources as a fold of `crucible.resources`: the state, its rules, and `apply`.

Commands (the REST handlers) check an event with `check` against the current state
before appending it; the projector calls `apply` for every event in log order, which
checks it again. When two API processes race (two `start`s of one experiment), both
pass the first check, and the fold accepts the first in the log and rejects the
second: its sender answers 409. Replay at start-up, the live tail and the
state-as-of-an-instant views all use this one fold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import UNSET

from schemas.resources import (
    AnyResourceEvent,
    ApiKeyCreated,
    ApiKeyRevoked,
    CheckpointUploaded,
    ExperimentCancelled,
    ExperimentCompleted,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentEvent,
    ExperimentFailed,
    ExperimentPaused,
    ExperimentResumed,
    ExperimentStarted,
    ExperimentUpdated,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    RateLimits,
    ResourceEvent,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRecovered,
    RunStarted,
    RunTimedOut,
    SessionEnded,
    StatisticalResultRecorded,
)
from schemas.statistics import StatisticalOptions, StatisticalOutcome

EXPERIMENT_STATUSES = ("pending", "running", "paused", "completed", "failed", "cancelled")

# Experiment actions: the statuses each may start from, and the status it leads to.
TRANSITIONS: dict[type[ResourceEvent], tuple[str, frozenset[str], str]] = {
    ExperimentStarted: ("start", frozenset({"pending"}), "running"),
    ExperimentPaused: ("pause", frozenset({"running"}), "paused"),
    ExperimentResumed: ("resume", frozenset({"paused"}), "running"),
    ExperimentCancelled: ("cancel", frozenset({"pending", "running", "paused"}), "cancelled"),
    # Reported by workers through telemetry (`crucible.experiment.completed|failed`).
    ExperimentCompleted: ("complete", frozenset({"pending", "running", "paused"}), "completed"),
    ExperimentFailed: ("fail", frozenset({"pending", "running", "paused"}), "failed"),
}
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
RUN_STATUSES = ("pending", "running", "completed", "failed")
FINAL_RUN_STATUSES = frozenset({"completed", "failed"})


def silence_error(seconds: int) -> str:
    """The error of a run failed for want of telemetry (RunTimedOut): the limit it passed."""
    return f"no telemetry for {seconds} s"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the fold refused an event. `code` is the API error code it answers with."""

    code: str  # "not_found", "conflict" or "duplicate"
    message: str
    first: RequestSeen | None = None  # for "duplicate": the request's first event


@dataclass(frozen=True, slots=True)
class RequestSeen:
    """An Idempotency-Key whose event the fold has seen, and what became of it."""

    fingerprint: str
    offset: int
    resource_id: str
    event_type: str
    rejection: Rejection | None
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class Applied:
    """One event of a resource's history, with its log offset."""

    offset: int
    event: AnyResourceEvent


@dataclass(slots=True)
class Experiment:
    id: str
    name: str
    description: str
    config: dict[str, Any]
    tags: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime
    status: str = "pending"
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    cloned_from: str | None = None
    created_by: str = ""
    error: str | None = None
    run_ids: list[str] = field(default_factory=list)  # in the order they started
    resumed_at: dt.datetime | None = None  # its runs' silence while it was paused does not count


@dataclass(frozen=True, slots=True)
class Upload:
    """A checkpoint file complete in the artifact store."""

    size: int
    sha256: str
    uploaded_at: dt.datetime


@dataclass(slots=True)
class Run:
    """A run as its lifecycle events left it; progress and metrics are SQL over its telemetry."""

    id: str
    experiment_id: str
    status: str
    hyperparameters: dict[str, Any]
    started_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    completed_at: dt.datetime | None = None
    error: str | None = None
    implicit: bool = False  # first seen through an event other than `crucible.run.started`
    uploads: dict[str, Upload] = field(default_factory=dict)  # checkpoint id → its file
    # The latest time the resources log shows the run was heard from: its events' times, and
    # the telemetry a recovery cites. A time-out citing an earlier silence is refused.
    heard_at: dt.datetime | None = None
    # Set while the run is failed for want of telemetry: when it was last heard from before
    # that. Only such a failure can be undone (by RunRecovered, or the worker's own verdict).
    silent_since: dt.datetime | None = None

    def last_heard(self) -> dt.datetime:
        return self.heard_at or self.created_at


@dataclass(slots=True)
class Model:
    id: str
    name: str
    provider: str
    type: str
    config: dict[str, Any]
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(slots=True)
class ApiKey:
    id: str
    name: str
    scopes: frozenset[str]
    secret_sha256: str
    rate_limits: RateLimits
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None


@dataclass(slots=True)
class StatisticalResult:
    """A recorded test: its outcome, the options it ran with and the telemetry it saw."""

    id: str
    experiment_id: str
    options: StatisticalOptions
    outcome: StatisticalOutcome
    telemetry_position: dict[int, int]
    created_at: dt.datetime
    created_by: str


@dataclass(slots=True)
class Resources:
    """Everything the resources log says, as of `position` (the next offset to apply)."""

    idempotency_ttl: dt.timedelta = dt.timedelta(days=1)
    experiments: dict[str, Experiment] = field(default_factory=dict)  # in creation order
    models: dict[str, Model] = field(default_factory=dict)
    model_ids_by_name: dict[str, str] = field(default_factory=dict)  # casefolded name → id
    runs: dict[str, Run] = field(default_factory=dict)  # runs of existing experiments, in start order
    # Ids of the runs whose status may still change without their worker saying so: running,
    # or failed for want of telemetry. The run watch judges these, not every run ever made.
    open_runs: dict[str, None] = field(default_factory=dict)
    api_keys: dict[str, ApiKey] = field(default_factory=dict)
    ended_sessions: dict[str, dt.datetime] = field(default_factory=dict)  # session id → its expiry
    statistical_results: dict[str, StatisticalResult] = field(default_factory=dict)  # in recording order
    requests: dict[str, RequestSeen] = field(default_factory=dict)  # Idempotency-Key → first event
    histories: dict[str, list[Applied]] = field(default_factory=dict)  # deleted resources' too
    position: int = 0
    # Changes applied per event class (ExperimentEvent, ModelEvent...): a view of one
    # collection stays valid while events of other kinds flow by.
    changes: dict[type[ResourceEvent], int] = field(default_factory=dict)

    def version(self, kind: type[ResourceEvent]) -> int:
        return self.changes.get(kind, 0)

    def apply(self, event: AnyResourceEvent, offset: int) -> Rejection | None:
        """Fold one event at `offset`; returns why it was refused, or None if it changed the state."""
        rejection = self.check(event)
        if event.request is not None and (rejection is None or rejection.code != "duplicate"):
            self._remember_request(event, offset, rejection)
        if rejection is None:
            _APPLY[type(event)](self, event)
            kind = type(event).__mro__[1]
            self.changes[kind] = self.changes.get(kind, 0) + 1
            applied = Applied(offset, event)
            self.histories.setdefault(event.resource_id, []).append(applied)
            if isinstance(event, RunEvent):
                # A run changes its experiment's view (its runs, maybe its status), and
                # belongs to the experiment's history so `as_of` replays it too.
                self.changes[ExperimentEvent] = self.changes.get(ExperimentEvent, 0) + 1
                self.histories.setdefault(event.experiment_id, []).append(applied)
        self.position = offset + 1
        return rejection

    def check(self, event: AnyResourceEvent) -> Rejection | None:
        """Why `event` cannot apply to the current state, or None when it can."""
        if event.request is not None and (seen := self.requests.get(event.request.key)) is not None:
            return Rejection("duplicate", "this Idempotency-Key was already used", seen)
        return _CHECK[type(event)](self, event)

    def history(self, resource_id: str) -> list[Applied]:
        return self.histories.get(resource_id, [])

    def replayed(self, resource_id: str, until: Callable[[Applied], bool]) -> Resources:
        """A state holding only `resource_id`, folded from its history while `until` holds."""
        state = Resources()
        for entry in self.history(resource_id):
            if not until(entry):
                break
            _APPLY[type(entry.event)](state, entry.event)
        return state

    def active_admin_keys(self) -> set[str]:
        """Ids of the keys that are not revoked and have the admin scope."""
        return {k.id for k in self.api_keys.values() if k.revoked_at is None and "admin" in k.scopes}

    def model_named(self, name: str) -> Model | None:
        model_id = self.model_ids_by_name.get(name.casefold())
        return None if model_id is None else self.models[model_id]

    def _remember_request(self, event: ResourceEvent, offset: int, rejection: Rejection | None) -> None:
        assert event.request is not None
        self.requests[event.request.key] = RequestSeen(
            event.request.fingerprint, offset, event.resource_id, type(event).__name__, rejection, event.at
        )
        # Forget keys older than the TTL; dicts keep insertion order, so the oldest come first.
        oldest = event.at - self.idempotency_ttl
        while self.requests:
            key, seen = next(iter(self.requests.items()))
            if seen.at >= oldest:
                break
            del self.requests[key]


# -- rules: why an event cannot apply ------------------------------------------------------


def experiment_missing(experiment_id: str) -> Rejection:
    return Rejection("not_found", f"experiment {experiment_id} not found")


def model_missing(model_id: str) -> Rejection:
    return Rejection("not_found", f"model {model_id} not found")


def transition_refused(experiment: Experiment, action: str) -> Rejection:
    return Rejection("conflict", f"cannot {action} experiment {experiment.id}: its status is {experiment.status}")


def _check_experiment_created(state: Resources, event: ExperimentCreated) -> Rejection | None:
    if event.experiment_id in state.experiments or event.experiment_id in state.histories:
        return Rejection("conflict", f"experiment {event.experiment_id} already exists")
    return None


def _check_experiment_updated(state: Resources, event: ExperimentUpdated) -> Rejection | None:
    experiment = state.experiments.get(event.experiment_id)
    if experiment is None:
        return experiment_missing(event.experiment_id)
    if event.config is not UNSET and experiment.status != "pending":
        return Rejection(
            "conflict", f"config can only change while the experiment is pending; its status is {experiment.status}"
        )
    return None


def _check_transition(state: Resources, event: ExperimentEvent) -> Rejection | None:
    experiment = state.experiments.get(event.experiment_id)
    if experiment is None:
        return experiment_missing(event.experiment_id)
    action, sources, _ = TRANSITIONS[type(event)]
    if experiment.status not in sources:
        return transition_refused(experiment, action)
    return None


def _check_experiment_deleted(state: Resources, event: ExperimentDeleted) -> Rejection | None:
    return None if event.experiment_id in state.experiments else experiment_missing(event.experiment_id)


def _check_model_name(state: Resources, model_id: str, name: str) -> Rejection | None:
    owner = state.model_ids_by_name.get(name.casefold())
    if owner is not None and owner != model_id:
        return Rejection("conflict", f"a model named {name!r} already exists ({owner})")
    return None


def _check_model_created(state: Resources, event: ModelCreated) -> Rejection | None:
    if event.model_id in state.models or event.model_id in state.histories:
        return Rejection("conflict", f"model {event.model_id} already exists")
    return _check_model_name(state, event.model_id, event.name)


def _check_model_updated(state: Resources, event: ModelUpdated) -> Rejection | None:
    if event.model_id not in state.models:
        return model_missing(event.model_id)
    if event.name is not UNSET:
        return _check_model_name(state, event.model_id, event.name)
    return None


def _check_model_deleted(state: Resources, event: ModelDeleted) -> Rejection | None:
    return None if event.model_id in state.models else model_missing(event.model_id)


def _check_api_key_created(state: Resources, event: ApiKeyCreated) -> Rejection | None:
    if event.key_id in state.api_keys:
        return Rejection("conflict", f"API key {event.key_id} already exists")
    return None


def _check_api_key_revoked(state: Resources, event: ApiKeyRevoked) -> Rejection | None:
    key = state.api_keys.get(event.key_id)
    if key is None:
        return Rejection("not_found", f"API key {event.key_id} not found")
    if key.revoked_at is not None:
        return Rejection("conflict", f"API key {event.key_id} is already revoked")
    # Checked in the fold, not only by the handler: two revocations of the last two admin
    # keys (maybe sent to two API processes) both pass their handler's check, and the log's
    # order then decides which one locks nobody out.
    if event.keep_an_admin and "admin" in key.scopes and not state.active_admin_keys() - {key.id}:
        return Rejection(
            "conflict",
            f"API key {event.key_id} is the last active admin key: revoking it would leave nobody able to"
            " manage keys; create another admin key first",
        )
    return None


def run_missing(run_id: str) -> Rejection:
    return Rejection("not_found", f"run {run_id} not found")


def _check_run_event(state: Resources, event: RunEvent) -> Rejection | None:
    """What every run event needs: a live experiment, and the run (if known) being its."""
    experiment = state.experiments.get(event.experiment_id)
    if experiment is None:
        return experiment_missing(event.experiment_id)
    if experiment.status == "cancelled":
        return Rejection("conflict", f"experiment {experiment.id} is cancelled: its runs no longer change")
    run = state.runs.get(event.run_id)
    if run is None and event.run_id in state.histories:
        return Rejection("conflict", f"run {event.run_id} was deleted with its experiment")
    if run is not None and run.experiment_id != event.experiment_id:
        return Rejection("conflict", f"run {run.id} belongs to experiment {run.experiment_id}")
    return None


def _check_run_started(state: Resources, event: RunStarted) -> Rejection | None:
    if (rejection := _check_run_event(state, event)) is not None:
        return rejection
    run = state.runs.get(event.run_id)
    # The real start may still fill in a run first seen through a later event.
    if run is not None and (event.implicit or not run.implicit):
        return Rejection("conflict", f"run {run.id} has already started")
    return None


def _check_run_finished(state: Resources, event: RunCompleted | RunFailed) -> Rejection | None:
    if (rejection := _check_run_event(state, event)) is not None:
        return rejection
    run = state.runs.get(event.run_id)
    # A time-out was the service's guess: the worker's own verdict, when it comes, replaces it.
    if run is not None and run.status in FINAL_RUN_STATUSES and run.silent_since is None:
        return Rejection("conflict", f"run {run.id} has already {run.status}")
    return None


def _check_run_timed_out(state: Resources, event: RunTimedOut) -> Rejection | None:
    if (rejection := _check_run_event(state, event)) is not None:
        return rejection
    run = state.runs.get(event.run_id)
    if run is None:
        return run_missing(event.run_id)
    if run.status != "running":
        return Rejection("conflict", f"run {run.id} is {run.status}, not running")
    # Whoever decided had not seen everything the log knows: a second watcher with old
    # knowledge, or a telemetry recovery folded since. The log's order settles it.
    if event.last_heard_at < run.last_heard():
        return Rejection("conflict", f"run {run.id} was heard from after {event.last_heard_at.isoformat()}")
    return None


def _check_run_recovered(state: Resources, event: RunRecovered) -> Rejection | None:
    if (rejection := _check_run_event(state, event)) is not None:
        return rejection
    run = state.runs.get(event.run_id)
    if run is None:
        return run_missing(event.run_id)
    if run.silent_since is None:
        return Rejection("conflict", f"run {run.id} did not time out")
    if event.heard_at <= run.silent_since:
        return Rejection("conflict", f"run {run.id} was not heard from after it fell silent")
    return None


def _check_checkpoint_uploaded(state: Resources, event: CheckpointUploaded) -> Rejection | None:
    if (rejection := _check_run_event(state, event)) is not None:
        return rejection
    run = state.runs.get(event.run_id)
    if run is None:
        return run_missing(event.run_id)
    upload = run.uploads.get(event.checkpoint_id)
    if upload is not None and upload.sha256 != event.sha256:
        return Rejection(
            "conflict",
            f"checkpoint {event.checkpoint_id} of run {run.id} already has another file (sha256 {upload.sha256})",
        )
    return None


def _check_statistical_result(state: Resources, event: StatisticalResultRecorded) -> Rejection | None:
    if event.experiment_id not in state.experiments:
        return experiment_missing(event.experiment_id)
    if event.stat_id in state.statistical_results:
        return Rejection("conflict", f"statistical result {event.stat_id} already exists")
    return None


def _always(state: Resources, event: ResourceEvent) -> Rejection | None:
    return None


# -- the fold: how an accepted event changes the state ---------------------------------------


def _experiment_created(state: Resources, event: ExperimentCreated) -> None:
    state.experiments[event.experiment_id] = Experiment(
        id=event.experiment_id,
        name=event.name,
        description=event.description,
        config=event.config,
        tags=event.tags,
        created_at=event.at,
        updated_at=event.at,
        cloned_from=event.cloned_from,
        created_by=event.actor,
    )


def _experiment_updated(state: Resources, event: ExperimentUpdated) -> None:
    _copy_changes(event, state.experiments[event.experiment_id])


def _copy_changes(event: ExperimentUpdated | ModelUpdated, target: Experiment | Model) -> None:
    """Set each field the update carries (UNSET: unchanged), and the time of the change.

    The changeable fields are those the update event adds to its resource's base event."""
    base_fields = msgspec.structs.fields(type(event).__mro__[1])
    shared = {info.name for info in base_fields}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if value is not UNSET and name not in shared:
            setattr(target, name, value)
    target.updated_at = event.at


def _experiment_transition(state: Resources, event: ExperimentEvent) -> None:
    experiment = state.experiments[event.experiment_id]
    experiment.status = TRANSITIONS[type(event)][2]
    if experiment.status == "running" and experiment.started_at is None:
        experiment.started_at = event.at
    if experiment.status in FINAL_STATUSES:
        experiment.completed_at = event.at
    if isinstance(event, ExperimentResumed):
        experiment.resumed_at = event.at
    experiment.updated_at = event.at


def _experiment_deleted(state: Resources, event: ExperimentDeleted) -> None:
    experiment = state.experiments.pop(event.experiment_id)
    for run_id in experiment.run_ids:
        del state.runs[run_id]
        state.open_runs.pop(run_id, None)


def _experiment_failed(state: Resources, event: ExperimentFailed) -> None:
    _experiment_transition(state, event)
    state.experiments[event.experiment_id].error = event.error or None


def _run_of(state: Resources, event: RunEvent) -> Run:
    """The event's run, made on the spot when the worker never reported its start."""
    run = state.runs.get(event.run_id)
    if run is None:
        run = Run(
            id=event.run_id,
            experiment_id=event.experiment_id,
            status="running",
            hyperparameters={},
            started_at=event.reported_at,
            created_at=event.at,
            updated_at=event.at,
            implicit=True,
            heard_at=event.at,
        )
        state.runs[run.id] = run
        state.open_runs[run.id] = None
        experiment = state.experiments.get(event.experiment_id)
        if experiment is None:  # replaying only the run's own history (`replayed`)
            return run
        experiment.run_ids.append(run.id)
        if experiment.status == "pending":  # a worker started it without asking
            experiment.status = "running"
            experiment.started_at = experiment.started_at or event.at
            experiment.updated_at = event.at
    return run


def _heard(run: Run, event: RunEvent) -> None:
    """A run event its worker caused (routed from its telemetry, or an upload): the run was heard."""
    run.heard_at = max(run.last_heard(), event.at)
    run.updated_at = event.at


def _run_started(state: Resources, event: RunStarted) -> None:
    run = _run_of(state, event)
    if not event.implicit:
        run.hyperparameters = event.hyperparameters
        run.started_at = event.reported_at
        run.implicit = False
    _heard(run, event)


def _run_finished(state: Resources, event: RunCompleted | RunFailed) -> None:
    run = _run_of(state, event)
    if isinstance(event, RunFailed):
        run.status, run.error = "failed", event.error or None
    else:
        run.status, run.error = "completed", None
    run.completed_at = event.reported_at
    run.silent_since = None
    state.open_runs.pop(run.id, None)
    _heard(run, event)


def _run_timed_out(state: Resources, event: RunTimedOut) -> None:
    run = state.runs[event.run_id]
    run.status, run.error = "failed", silence_error(event.seconds)
    run.silent_since = event.last_heard_at
    run.completed_at = event.at
    run.updated_at = event.at


def _run_recovered(state: Resources, event: RunRecovered) -> None:
    run = state.runs[event.run_id]
    run.status, run.error, run.completed_at, run.silent_since = "running", None, None, None
    run.heard_at = max(run.last_heard(), event.heard_at)
    run.updated_at = event.at


def _checkpoint_uploaded(state: Resources, event: CheckpointUploaded) -> None:
    run = state.runs[event.run_id]
    run.uploads[event.checkpoint_id] = Upload(event.size, event.sha256, event.at)
    _heard(run, event)


def _model_created(state: Resources, event: ModelCreated) -> None:
    state.models[event.model_id] = Model(
        id=event.model_id,
        name=event.name,
        provider=event.provider,
        type=event.type,
        config=event.config,
        status=event.status,
        created_at=event.at,
        updated_at=event.at,
    )
    state.model_ids_by_name[event.name.casefold()] = event.model_id


def _model_updated(state: Resources, event: ModelUpdated) -> None:
    model = state.models[event.model_id]
    if event.name is not UNSET:
        del state.model_ids_by_name[model.name.casefold()]
        state.model_ids_by_name[event.name.casefold()] = model.id
    _copy_changes(event, model)


def _model_deleted(state: Resources, event: ModelDeleted) -> None:
    model = state.models.pop(event.model_id)
    del state.model_ids_by_name[model.name.casefold()]


def _api_key_created(state: Resources, event: ApiKeyCreated) -> None:
    state.api_keys[event.key_id] = ApiKey(
        id=event.key_id,
        name=event.name,
        scopes=frozenset(event.scopes),
        secret_sha256=event.secret_sha256,
        rate_limits=event.rate_limits,
        created_at=event.at,
    )


def _api_key_revoked(state: Resources, event: ApiKeyRevoked) -> None:
    state.api_keys[event.key_id].revoked_at = event.at


def _session_ended(state: Resources, event: SessionEnded) -> None:
    state.ended_sessions[event.session_id] = event.expires_at
    # Expired sessions are refused anyway: forget them so the set stays small.
    for session_id in [s for s, expiry in state.ended_sessions.items() if expiry < event.at]:
        del state.ended_sessions[session_id]


def _statistical_result_recorded(state: Resources, event: StatisticalResultRecorded) -> None:
    state.statistical_results[event.stat_id] = StatisticalResult(
        id=event.stat_id,
        experiment_id=event.experiment_id,
        options=event.options,
        outcome=event.outcome,
        telemetry_position=event.telemetry_position,
        created_at=event.at,
        created_by=event.actor,
    )


_Check = Callable[[Resources, Any], Rejection | None]
_Apply = Callable[[Resources, Any], None]

_CHECK: dict[type[ResourceEvent], _Check] = {
    ExperimentCreated: _check_experiment_created,
    ExperimentUpdated: _check_experiment_updated,
    ExperimentDeleted: _check_experiment_deleted,
    ModelCreated: _check_model_created,
    ModelUpdated: _check_model_updated,
    ModelDeleted: _check_model_deleted,
    ApiKeyCreated: _check_api_key_created,
    ApiKeyRevoked: _check_api_key_revoked,
    SessionEnded: _always,
    RunStarted: _check_run_started,
    RunCompleted: _check_run_finished,
    RunFailed: _check_run_finished,
    RunTimedOut: _check_run_timed_out,
    RunRecovered: _check_run_recovered,
    CheckpointUploaded: _check_checkpoint_uploaded,
    StatisticalResultRecorded: _check_statistical_result,
    **{event_type: _check_transition for event_type in TRANSITIONS},
}
_APPLY: dict[type[ResourceEvent], _Apply] = {
    ExperimentCreated: _experiment_created,
    ExperimentUpdated: _experiment_updated,
    ExperimentDeleted: _experiment_deleted,
    ModelCreated: _model_created,
    ModelUpdated: _model_updated,
    ModelDeleted: _model_deleted,
    ApiKeyCreated: _api_key_created,
    ApiKeyRevoked: _api_key_revoked,
    SessionEnded: _session_ended,
    RunStarted: _run_started,
    RunCompleted: _run_finished,
    RunFailed: _run_finished,
    RunTimedOut: _run_timed_out,
    RunRecovered: _run_recovered,
    CheckpointUploaded: _checkpoint_uploaded,
    StatisticalResultRecorded: _statistical_result_recorded,
    **{event_type: _experiment_transition for event_type in TRANSITIONS},
    ExperimentFailed: _experiment_failed,
}

event_decoder = msgspec.json.Decoder(AnyResourceEvent)
event_encoder = msgspec.json.Encoder()
