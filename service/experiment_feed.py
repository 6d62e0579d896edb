"""What the `experiment:<id>` channel pushes, from the resources log and the experiment's telemetry.

Two tables say it, so a new kind of event is one function and one entry:

- `RESOURCE_PUSHES`: resource event type → function of the event and the state right
  after it (the projector's fold) → pushes. The event reaches the channel of its
  `experiment_id`.
- `TELEMETRY_PUSHES`: telemetry event name → method of `ExperimentFeed` (which keeps
  what a channel needs between events, like the progress rate) → pushes. Records keyed
  by the experiment's id reach its feed while a socket of this process has joined it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from schemas.live import LiveError, ProgressUpdated, StatusChanged
from schemas.resources import (
    ExperimentCancelled,
    ExperimentDeleted,
    ExperimentPaused,
    ExperimentResumed,
    ExperimentStarted,
    ResourceEvent,
)
from schemas.telemetry import StoredEvent
from service.resources import Experiment, Resources

# (event name on the channel, payload)
Push = tuple[str, msgspec.Struct]

PROGRESS_EVENT = "crucible.run.progress"
PROGRESS_MEASUREMENT = "progress"
# Progress observations per run the rate is measured over: recent enough to follow a
# run that speeds up or slows down, enough to smooth out uneven reports.
RATE_WINDOW = 20


def experiment_topic(experiment_id: str) -> str:
    return f"experiment:{experiment_id}"


def status_of(experiment: Experiment) -> StatusChanged:
    return StatusChanged(
        status=experiment.status, started_at=experiment.started_at, completed_at=experiment.completed_at
    )


def status_changed(event: Any, state: Resources) -> list[Push]:
    experiment = state.experiments.get(event.experiment_id)
    return [] if experiment is None else [("status_changed", status_of(experiment))]


def experiment_deleted(event: ExperimentDeleted, state: Resources) -> list[Push]:
    message = f"experiment {event.experiment_id} was deleted"
    return [("error", LiveError(message=message, code="experiment_deleted"))]


RESOURCE_PUSHES: dict[type[ResourceEvent], Callable[[Any, Resources], list[Push]]] = {
    ExperimentStarted: status_changed,
    ExperimentPaused: status_changed,
    ExperimentResumed: status_changed,
    ExperimentCancelled: status_changed,
    ExperimentDeleted: experiment_deleted,
}


def resource_pushes(event: ResourceEvent, state: Resources) -> tuple[str, list[Push]] | None:
    """(experiment id, pushes) of a resource event, or None when no experiment channel cares."""
    push = RESOURCE_PUSHES.get(type(event))
    experiment_id = getattr(event, "experiment_id", None)
    if push is None or not isinstance(experiment_id, str):
        return None
    return experiment_id, push(event, state)


@dataclass(slots=True)
class RunProgress:
    """Recent (time, progress) reports of one run."""

    reports: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))

    def observe(self, at: dt.datetime, progress: float) -> None:
        seconds = at.timestamp()
        if self.reports and seconds < self.reports[-1][0]:
            return  # a late report says nothing about the rate now
        self.reports.append((seconds, progress))

    @property
    def progress(self) -> float:
        return self.reports[-1][1]

    def eta_seconds(self) -> float | None:
        """Seconds to 1.0 at the rate over the window; None while it cannot be told."""
        if self.progress >= 1.0:
            return 0.0
        (first_at, first), (last_at, last) = self.reports[0], self.reports[-1]
        if last_at <= first_at or last <= first:
            return None
        return (1.0 - last) * (last_at - first_at) / (last - first)


class ExperimentFeed:
    """One experiment channel's memory between telemetry events (per process, while joined)."""

    def __init__(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id
        self.runs: dict[str, RunProgress] = {}

    def telemetry(self, events: list[StoredEvent]) -> list[Push]:
        """The pushes of a batch of this experiment's telemetry events."""
        pushes: list[Push] = []
        for event in events:
            handler = TELEMETRY_PUSHES.get(".".join(event.event_name))
            if handler is not None:
                pushes.extend(handler(self, event))
        return pushes

    def progress_reported(self, event: StoredEvent) -> list[Push]:
        """`progress_updated`: the experiment's progress is the mean of its runs' latest, and
        its ETA the longest of theirs (runs run side by side), each from its observed rate."""
        value = event.measurements.get(PROGRESS_MEASUREMENT)
        if value is None or math.isnan(value):
            return []
        run_id = event.metadata.get("run_id", "")
        run = self.runs.setdefault(run_id, RunProgress())
        run.observe(event.timestamp, min(max(value, 0.0), 1.0))
        progress = sum(r.progress for r in self.runs.values()) / len(self.runs)
        etas = [r.eta_seconds() for r in self.runs.values()]
        eta = None if None in etas else max(e for e in etas if e is not None)
        return [
            ("progress_updated", ProgressUpdated(progress=progress, eta_seconds=_whole(eta), run_id=run_id)),
        ]


TELEMETRY_PUSHES: dict[str, Callable[[ExperimentFeed, StoredEvent], list[Push]]] = {
    PROGRESS_EVENT: ExperimentFeed.progress_reported,
}


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds)
