"""What an experiment channel pushes, as pure logic: status differences, progress and its ETA."""

from __future__ import annotations

import datetime as dt
from typing import Any

from schemas.live import ProgressUpdated, StatusChanged
from schemas.resources import ExperimentCreated, ExperimentStarted, ExperimentUpdated
from schemas.telemetry import StoredEvent
from service.live.experiment_feed import ExperimentFeed
from service.resources.fold import Resources

T0 = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.UTC)


def applied(state: Resources, event: Any) -> Any:
    assert state.apply(event, state.position) is None
    return event


def progress(run_id: str, seconds: float, **measurements: float) -> StoredEvent:
    at = T0 + dt.timedelta(seconds=seconds)
    return StoredEvent(
        id=f"evt_{run_id}_{seconds}",
        event_name=["crucible", "run", "progress"],
        measurements=measurements,
        metadata={"experiment_id": "exp_1", "run_id": run_id},
        timestamp=at,
        received_at=at,
    )


def reported(feed: ExperimentFeed, event: StoredEvent) -> ProgressUpdated:
    [(name, payload)] = feed.telemetry([event])
    assert name == "progress_updated" and isinstance(payload, ProgressUpdated)
    return payload


def test_status_changed_follows_any_event_that_changes_the_status() -> None:
    state = Resources()
    envelope = {"event_id": "e", "at": T0, "experiment_id": "exp_1"}
    applied(state, ExperimentCreated(**envelope, name="x"))
    feed = ExperimentFeed("exp_1", state)
    renamed = applied(state, ExperimentUpdated(**{**envelope, "event_id": "e2"}, name="y"))
    assert feed.resource_event(renamed, state) == []  # same status: nothing to say
    started = applied(state, ExperimentStarted(**{**envelope, "event_id": "e3"}))
    assert feed.resource_event(started, state) == [("status_changed", StatusChanged(status="running", started_at=T0))]


def test_progress_eta_comes_from_the_recent_rate_and_ignores_late_reports() -> None:
    feed = ExperimentFeed("exp_1", Resources())
    assert feed.telemetry([progress("r", 0, progress=0.1)]) == [
        ("progress_updated", ProgressUpdated(progress=0.1, eta_seconds=None, run_id="r"))
    ]
    assert reported(feed, progress("r", 10, progress=0.2)).eta_seconds == 80  # 0.8 left at 0.01/s
    assert reported(feed, progress("r", 5, progress=0.9)).progress == 0.2  # older than the last report
    done = reported(feed, progress("r", 20, progress=1.5))  # clipped to 1
    assert (done.progress, done.eta_seconds) == (1.0, 0)


def test_a_run_that_does_not_advance_has_no_eta() -> None:
    feed = ExperimentFeed("exp_1", Resources())
    feed.telemetry([progress("r", 0, progress=0.5)])
    assert reported(feed, progress("r", 10, progress=0.5)).eta_seconds is None


def test_a_runs_latest_metrics_are_kept_for_its_completion() -> None:
    feed = ExperimentFeed("exp_1", Resources())
    assert feed.telemetry([progress("r", 0, loss=0.9, accuracy=0.5)]) == []  # metrics only: no progress to push
    feed.telemetry([progress("r", 10, loss=0.4, progress=0.5)])
    assert feed.metrics_of("r") == {"loss": 0.4, "accuracy": 0.5, "progress": 0.5}
    assert feed.metrics_of("other") == {}
