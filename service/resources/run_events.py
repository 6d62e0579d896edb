"""Reserved telemetry names: how workers report runs, and which of their events become resource events.

Workers report a run through telemetry (ARCHITECTURE.md): `crucible.run.started`,
`.progress`, `.log`, `.checkpoint`, `.completed`, `.failed`, and
`crucible.experiment.completed|failed`. Ingest checks these events' required
metadata, then routes the lifecycle ones into `crucible.resources` with the same
append, so runs and experiment statuses are projections. Progress, logs and
checkpoints stay telemetry (SQL); only the first event of a run nobody reported
as started also makes an implicit `RunStarted`.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from schemas.resources import (
    AnyResourceEvent,
    ExperimentCompleted,
    ExperimentFailed,
    RunCompleted,
    RunFailed,
    RunStarted,
)
from schemas.telemetry import TelemetryEvent
from service.resources.fold import Run

RESERVED_PREFIX = "crucible"
RUN_EVENTS = ("started", "progress", "log", "checkpoint", "completed", "failed")
EXPERIMENT_EVENTS = ("completed", "failed")
LOG_LEVELS = ("debug", "info", "warning", "error")  # in order of severity
# Run and checkpoint ids name files in the artifact store: no separators, no dot segments.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
ID_RULE = "must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
MAX_ERROR_CHARS = 4096
# Runs this process already routed an implicit start for, so a burst of progress
# events before the fold has caught up appends one start, not one per batch.
IMPLICIT_STARTS_REMEMBERED = 10_000


def is_reserved(names: list[str]) -> bool:
    """Whether an event name is one whose shape ingest checks (and may route)."""
    return len(names) == 3 and names[0] == RESERVED_PREFIX and names[1] in ("run", "experiment")


def reserved_problem(event: TelemetryEvent) -> tuple[str, str] | None:
    """(message, field) of what a reserved event lacks, or None when it is well formed."""
    kind, action = event.event_name[1], event.event_name[2]
    metadata = event.metadata
    if kind == "experiment":
        if action not in EXPERIMENT_EVENTS:
            names = ", ".join(EXPERIMENT_EVENTS)
            return f"unknown reserved event; crucible.experiment.* is one of {names}", "event_name"
        if not metadata.get("experiment_id"):
            return "crucible.experiment.* events need metadata experiment_id", "metadata.experiment_id"
        return None
    if action not in RUN_EVENTS:
        return f"unknown reserved event; crucible.run.* is one of {', '.join(RUN_EVENTS)}", "event_name"
    for key in ("run_id", "experiment_id"):
        if not metadata.get(key):
            return f"crucible.run.* events need metadata {key}", f"metadata.{key}"
    if not SAFE_ID.fullmatch(metadata["run_id"]):
        return f"run_id {ID_RULE}", "metadata.run_id"
    if action == "log":
        if metadata.get("level") not in LOG_LEVELS:
            return f"crucible.run.log needs metadata level, one of {', '.join(LOG_LEVELS)}", "metadata.level"
        if "message" not in metadata:
            return "crucible.run.log needs metadata message", "metadata.message"
    if action == "checkpoint" and not SAFE_ID.fullmatch(metadata.get("checkpoint_id", "")):
        return (
            f"crucible.run.checkpoint needs metadata checkpoint_id: {ID_RULE}",
            "metadata.checkpoint_id",
        )
    if action == "started" and event.data is not None and not isinstance(event.data.get("hyperparameters", {}), dict):
        return "data.hyperparameters must be an object", "data.hyperparameters"
    return None


class RunRouter:
    """Turns a batch's reserved events into the resource events they imply."""

    def __init__(self, runs: Callable[[], Mapping[str, Run]]) -> None:
        self._runs = runs
        self._implicit_starts: OrderedDict[str, None] = OrderedDict()

    def resource_events(self, reserved: list[TelemetryEvent], actor: str) -> list[AnyResourceEvent]:
        runs = self._runs()
        at = dt.datetime.now(dt.UTC)
        routed: list[AnyResourceEvent] = []
        for event in reserved:
            routed.extend(self._implied(event, at, actor, runs))
        return routed

    def _implied(
        self, event: TelemetryEvent, at: dt.datetime, actor: str, runs: Mapping[str, Run]
    ) -> list[AnyResourceEvent]:
        assert event.id is not None and event.timestamp is not None  # filled in by ingest
        metadata = event.metadata
        fields: dict[str, Any] = {
            "event_id": event.id,
            "at": at,
            "actor": actor,
            "experiment_id": metadata["experiment_id"],
        }
        kind, action = event.event_name[1], event.event_name[2]
        error = metadata.get("error", "")[:MAX_ERROR_CHARS]
        if kind == "experiment":
            if action == "completed":
                return [ExperimentCompleted(**fields)]
            return [ExperimentFailed(**fields, error=error)]
        fields.update(run_id=metadata["run_id"], reported_at=event.timestamp)
        if action == "started":
            return [RunStarted(**fields, hyperparameters=(event.data or {}).get("hyperparameters", {}))]
        if action == "completed":
            return [RunCompleted(**fields, metrics=event.measurements)]
        if action == "failed":
            return [RunFailed(**fields, error=error)]
        if self._first_sight(fields["run_id"], runs):  # progress, log or checkpoint of an unknown run
            fields["event_id"] = uuid.uuid4().hex
            return [RunStarted(**fields, implicit=True)]
        return []

    def _first_sight(self, run_id: str, runs: Mapping[str, Run]) -> bool:
        if run_id in runs or run_id in self._implicit_starts:
            return False
        self._implicit_starts[run_id] = None
        if len(self._implicit_starts) > IMPLICIT_STARTS_REMEMBERED:
            self._implicit_starts.popitem(last=False)
        return True
