"""Domain events of the `crucible.resources` topic: the source of truth of every resource.

Each is a fact in the past tense. The log keeps them forever and every API process
folds them (service/resources/fold.py) into the state the REST API serves. Schema
evolution: new fields get defaults, existing fields never change type, and nothing
read back from the log forbids unknown fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from schemas.statistics import StatisticalOptions, StatisticalOutcome


class RequestRef(msgspec.Struct, frozen=True, array_like=True):
    """The Idempotency-Key of the request that caused an event, and its body's fingerprint.

    Stored in the event so that every process recognises a retry, even one that
    reaches another API replica or races the first attempt.
    """

    key: str
    fingerprint: str


class ResourceEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="event", tag=True, gc=False):
    """What every resource event carries: when, by which API key, for which request."""

    event_id: str
    at: dt.datetime
    actor: str = ""
    request: RequestRef | None = None

    @property
    def resource_id(self) -> str:
        raise NotImplementedError


class ExperimentEvent(ResourceEvent, frozen=True, kw_only=True):
    experiment_id: str

    @property
    def resource_id(self) -> str:
        return self.experiment_id


class ExperimentCreated(ExperimentEvent, frozen=True, kw_only=True):
    name: str
    description: str = ""
    config: dict[str, Any] = {}
    tags: list[str] = []
    cloned_from: str | None = None


class ExperimentUpdated(ExperimentEvent, frozen=True, kw_only=True):
    """Only the fields present changed."""

    name: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET
    config: dict[str, Any] | UnsetType = UNSET


class ExperimentStarted(ExperimentEvent, frozen=True, kw_only=True):
    pass


class ExperimentPaused(ExperimentEvent, frozen=True, kw_only=True):
    pass


class ExperimentResumed(ExperimentEvent, frozen=True, kw_only=True):
    pass


class ExperimentCancelled(ExperimentEvent, frozen=True, kw_only=True):
    pass


class ExperimentDeleted(ExperimentEvent, frozen=True, kw_only=True):
    pass


class ExperimentCompleted(ExperimentEvent, frozen=True, kw_only=True):
    """Reported by a worker (telemetry `crucible.experiment.completed`)."""


class ExperimentFailed(ExperimentEvent, frozen=True, kw_only=True):
    """Reported by a worker (telemetry `crucible.experiment.failed`, metadata `error`)."""

    error: str = ""


class RunEvent(ResourceEvent, frozen=True, kw_only=True):
    """A run's lifecycle, routed here from the worker's telemetry (`crucible.run.*`).

    `event_id` is the telemetry event's id, and `reported_at` its timestamp (the
    worker's clock): a retried batch carries the same ids, and the fold refuses what
    it has already applied, so routing the same telemetry twice changes nothing.
    """

    run_id: str
    experiment_id: str
    reported_at: dt.datetime

    @property
    def resource_id(self) -> str:
        return self.run_id


class RunStarted(RunEvent, frozen=True, kw_only=True):
    """`implicit`: made for the first event of a run that was never reported as started."""

    hyperparameters: dict[str, Any] = {}
    implicit: bool = False


class RunCompleted(RunEvent, frozen=True, kw_only=True):
    """`metrics`: the measurements the completion event carried (final values)."""

    metrics: dict[str, float] = {}


class RunFailed(RunEvent, frozen=True, kw_only=True):
    error: str = ""


class RunTimedOut(RunEvent, frozen=True, kw_only=True):
    """The service failed a running run whose worker fell silent: no telemetry of it for
    `seconds` (its experiment's `config.run_stale_seconds`, else `--run-stale-seconds`)
    after `last_heard_at`, the last time the log shows it was heard from. Made by the one
    API process watching runs (service/resources/run_watch.py); `reported_at` is when it
    decided. The fold refuses it when the log knows of the run being heard after
    `last_heard_at`, so a decision made on stale knowledge cannot apply."""

    seconds: int
    last_heard_at: dt.datetime


class RunRecovered(RunEvent, frozen=True, kw_only=True):
    """A run that timed out was heard from again (telemetry at `heard_at`): it runs again.
    The fold refuses it unless the run timed out and `heard_at` is after the silence the
    time-out reported."""

    heard_at: dt.datetime


class CheckpointUploaded(RunEvent, frozen=True, kw_only=True):
    """A checkpoint's file is complete in the artifact store (written, synced, renamed)."""

    checkpoint_id: str
    size: int
    sha256: str


class ModelEvent(ResourceEvent, frozen=True, kw_only=True):
    model_id: str

    @property
    def resource_id(self) -> str:
        return self.model_id


class ModelCreated(ModelEvent, frozen=True, kw_only=True):
    name: str
    provider: str = ""
    type: str = ""
    config: dict[str, Any] = {}
    status: str = "active"


class ModelUpdated(ModelEvent, frozen=True, kw_only=True):
    name: str | UnsetType = UNSET
    provider: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    config: dict[str, Any] | UnsetType = UNSET
    status: str | UnsetType = UNSET


class ModelDeleted(ModelEvent, frozen=True, kw_only=True):
    pass


PerMinute = Annotated[int, msgspec.Meta(ge=1)]


class RateLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Per-minute limits of one API key, by endpoint class (API.md's table by default)."""

    read: PerMinute = 1000
    write: PerMinute = 100
    ingest: PerMinute = 10_000  # events, not requests
    export: PerMinute = 10


class ApiKeyEvent(ResourceEvent, frozen=True, kw_only=True):
    key_id: str

    @property
    def resource_id(self) -> str:
        return self.key_id


class ApiKeyCreated(ApiKeyEvent, frozen=True, kw_only=True):
    """Only the SHA-256 of the secret is kept; the secret itself is shown once."""

    name: str
    scopes: list[str]
    secret_sha256: str
    rate_limits: RateLimits = RateLimits()


class ApiKeyRevoked(ApiKeyEvent, frozen=True, kw_only=True):
    """`keep_an_admin`: the revocation applies only if another active admin key remains.
    Every revocation since that rule sets it; events written before it (False) apply as
    they did, so a replay never brings back a key that was revoked."""

    keep_an_admin: bool = False


class SessionEnded(ResourceEvent, frozen=True, kw_only=True):
    """A session token logged out before it expired; refused from now on."""

    session_id: str
    expires_at: dt.datetime

    @property
    def resource_id(self) -> str:
        return self.session_id


class StatisticalResultEvent(ResourceEvent, frozen=True, kw_only=True):
    stat_id: str

    @property
    def resource_id(self) -> str:
        return self.stat_id


class StatisticalResultRecorded(StatisticalResultEvent, frozen=True, kw_only=True):
    """A statistical test run on an experiment's telemetry: what was asked, what it found,
    and which telemetry it saw (the highest log offset per partition among the rows used),
    so the result can be traced to its data and re-run on the same rows."""

    experiment_id: str
    options: StatisticalOptions
    outcome: StatisticalOutcome
    telemetry_position: dict[int, int] = {}


AnyResourceEvent = (
    ExperimentCreated
    | ExperimentUpdated
    | ExperimentStarted
    | ExperimentPaused
    | ExperimentResumed
    | ExperimentCancelled
    | ExperimentDeleted
    | ExperimentCompleted
    | ExperimentFailed
    | RunStarted
    | RunCompleted
    | RunFailed
    | RunTimedOut
    | RunRecovered
    | CheckpointUploaded
    | ModelCreated
    | ModelUpdated
    | ModelDeleted
    | ApiKeyCreated
    | ApiKeyRevoked
    | SessionEnded
    | StatisticalResultRecorded
)
