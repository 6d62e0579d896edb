"""What the `experiment:<id>` channel pushes, from the resources log and the experiment's telemetry.

A feed lives in the live hub while a socket of its process has joined the channel:

- after every resource event of its experiment (any event with its `experiment_id`),
  `status_changed` when the experiment's status or times differ from what the channel
  last saw, whichever event changed them; after a run's event, `run_status_changed` when
  that run's status or error differ from what the channel last saw (a run timed out by
  the run watch, or heard again, included);
- `RESOURCE_PUSHES`: resource event type → method of the feed, given the event and the
  state right after it (the projector's fold) → further pushes (a deletion's `error`);
- `TELEMETRY_PUSHES`: telemetry event name → method of the feed (which keeps what it
  needs between events, like the progress rate) → pushes. Telemetry records keyed by
  the experiment's id reach its feed.

So a new kind of push is one function and one entry in a table.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from schemas.live import LiveError, ProgressUpdated, RunCompletedPush, RunStatusChanged, StatusChanged
from schemas.resources import ExperimentDeleted, ResourceEvent, RunCompleted, RunEvent
from schemas.telemetry import StoredEvent
from service.resources.fold import Experiment, Resources, Run

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


def run_status_of(run: Run) -> RunStatusChanged:
    return RunStatusChanged(run_id=run.id, status=run.status, error=run.error, completed_at=run.completed_at)


@dataclass(slots=True)
class RunProgress:
    """What a run's `crucible.run.progress` events said: recent (time, progress) reports,
    and the latest value of each measurement (its metrics)."""

    reports: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))
    metrics: dict[str, float] = field(default_factory=dict)

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
    """One experiment channel's memory between events (per process, while joined)."""

    def __init__(self, experiment_id: str, state: Resources) -> None:
        self.experiment_id = experiment_id
        experiment = state.experiments.get(experiment_id)
        self.status = None if experiment is None else status_of(experiment)
        self.runs: dict[str, RunProgress] = {}  # as reported since the channel was joined
        run_ids = [] if experiment is None else experiment.run_ids
        self.run_statuses = {run_id: run_status_of(state.runs[run_id]) for run_id in run_ids if run_id in state.runs}

    def resource_event(self, event: ResourceEvent, state: Resources) -> list[Push]:
        """The pushes of a resource event of this experiment, with `state` right after it."""
        pushes: list[Push] = []
        experiment = state.experiments.get(self.experiment_id)
        if experiment is not None and (status := status_of(experiment)) != self.status:
            self.status = status
            pushes.append(("status_changed", status))
        run = state.runs.get(event.run_id) if isinstance(event, RunEvent) else None
        if run is not None and (run_status := run_status_of(run)) != self.run_statuses.get(run.id):
            self.run_statuses[run.id] = run_status
            pushes.append(("run_status_changed", run_status))
        more = RESOURCE_PUSHES.get(type(event))
        if more is not None:
            pushes.extend(more(self, event, state))
        return pushes

    def telemetry(self, events: list[StoredEvent]) -> list[Push]:
        """The pushes of a batch of this experiment's telemetry events."""
        pushes: list[Push] = []
        for event in events:
            handler = TELEMETRY_PUSHES.get(".".join(event.event_name))
            if handler is not None:
                pushes.extend(handler(self, event))
        return pushes

    def deleted(self, event: ExperimentDeleted, state: Resources) -> list[Push]:
        message = f"experiment {event.experiment_id} was deleted"
        return [("error", LiveError(message=message, code="experiment_deleted"))]

    def progress_reported(self, event: StoredEvent) -> list[Push]:
        """`progress_updated`: the experiment's progress is the mean of its runs' latest, and
        its ETA the longest of theirs (runs run side by side), each from its observed rate."""
        run_id = event.metadata.get("run_id", "")
        run = self.runs.setdefault(run_id, RunProgress())
        run.metrics.update(event.measurements)  # the latest value of a metric wins
        value = event.measurements.get(PROGRESS_MEASUREMENT)
        if value is None or math.isnan(value):
            return []
        run.observe(event.timestamp, min(max(value, 0.0), 1.0))
        reporting = [r for r in self.runs.values() if r.reports]
        progress = sum(r.progress for r in reporting) / len(reporting)
        etas = [r.eta_seconds() for r in reporting]
        eta = None if None in etas else max(e for e in etas if e is not None)
        return [
            ("progress_updated", ProgressUpdated(progress=progress, eta_seconds=_whole(eta), run_id=run_id)),
        ]

    def run_completed(self, event: RunCompleted, state: Resources) -> list[Push]:
        metrics = {key: value for key, value in self.metrics_of(event.run_id).items() if key != PROGRESS_MEASUREMENT}
        metrics.update(event.metrics)
        return [("run_completed", RunCompletedPush(run_id=event.run_id, metrics=metrics))]

    def metrics_of(self, run_id: str) -> dict[str, float]:
        """The latest metrics a run reported while the channel was joined ({} if none)."""
        run = self.runs.get(run_id)
        return {} if run is None else dict(run.metrics)


RESOURCE_PUSHES: dict[type[ResourceEvent], Callable[[ExperimentFeed, Any, Resources], list[Push]]] = {
    ExperimentDeleted: ExperimentFeed.deleted,
    RunCompleted: ExperimentFeed.run_completed,
}
TELEMETRY_PUSHES: dict[str, Callable[[ExperimentFeed, StoredEvent], list[Push]]] = {
    PROGRESS_EVENT: ExperimentFeed.progress_reported,
}


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds)
