"""Runs whose worker fell silent, as pure logic: the fold's rules for RunTimedOut and RunRecovered,
the judge (service/resources/run_silence.py) and what the listener hears (run_heartbeats.py)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import msgspec
import pytest

from schemas.resources import (
    CheckpointUploaded,
    ExperimentCancelled,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentPaused,
    ExperimentResumed,
    RunCompleted,
    RunFailed,
    RunRecovered,
    RunStarted,
    RunTimedOut,
)
from schemas.telemetry import RECORD_CONTENT_TYPE, RECORD_EVENTS_HEADER, TelemetryEvent, TelemetryRecord
from service.log.interface import TELEMETRY_TOPIC, StoredRecord
from service.resources.fold import Resources
from service.resources.run_heartbeats import SEARCH_AT_MOST, RunHeartbeats
from service.resources.run_silence import LIMIT_RULE, Verdicts, config_problem, judge

T0 = dt.datetime(2024, 1, 15, 10, 0, tzinfo=dt.UTC)
_ids = itertools.count()


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def run_fields(run_id: str, seconds: float, experiment_id: str = "exp_1") -> dict[str, Any]:
    return {
        "event_id": f"evt_{next(_ids)}",
        "at": at(seconds),
        "run_id": run_id,
        "experiment_id": experiment_id,
        "reported_at": at(seconds),
    }


def timed_out(run_id: str, seconds: float, heard: float, limit: int = 60) -> RunTimedOut:
    return RunTimedOut(**run_fields(run_id, seconds), seconds=limit, last_heard_at=at(heard))


def recovered(run_id: str, seconds: float, heard: float) -> RunRecovered:
    return RunRecovered(**run_fields(run_id, seconds), heard_at=at(heard))


class Log:
    """A Resources state fed events at consecutive offsets."""

    def __init__(self) -> None:
        self.state = Resources()

    def apply(self, event: Any) -> Any:
        return self.state.apply(event, self.state.position)

    def accept(self, *events: Any) -> None:
        for event in events:
            assert self.apply(event) is None, event

    def refused(self, event: Any) -> str:
        rejection = self.apply(event)
        assert rejection is not None and rejection.code == "conflict", rejection
        return str(rejection.message)


@pytest.fixture
def log() -> Log:
    """exp_1 with one running run, run_a, started (heard) at T0."""
    log = Log()
    log.accept(
        ExperimentCreated(event_id="c", at=T0, experiment_id="exp_1", name="E", config={"run_stale_seconds": 60}),
        RunStarted(**run_fields("run_a", 0)),
    )
    return log


# -- the fold ----------------------------------------------------------------------------------


def test_a_time_out_fails_the_run_with_the_limit_in_its_error(log: Log) -> None:
    log.accept(timed_out("run_a", 61, heard=0))
    run = log.state.runs["run_a"]
    assert (run.status, run.error) == ("failed", "no telemetry for 60 s")
    assert (run.completed_at, run.silent_since) == (at(61), T0)


def test_the_same_verdict_twice_applies_once(log: Log) -> None:
    log.accept(timed_out("run_a", 61, heard=0))
    assert "is failed, not running" in log.refused(timed_out("run_a", 61.5, heard=0))
    log.accept(recovered("run_a", 70, heard=65))
    assert "did not time out" in log.refused(recovered("run_a", 70.5, heard=65))
    assert [type(entry.event) for entry in log.state.history("run_a")] == [RunStarted, RunTimedOut, RunRecovered]


def test_a_time_out_citing_an_older_silence_than_the_log_knows_is_refused(log: Log) -> None:
    # The worker uploaded a checkpoint at 30, folded before the verdict made without knowing it.
    log.accept(CheckpointUploaded(**run_fields("run_a", 30), checkpoint_id="c1", size=1, sha256="00"))
    assert "was heard from after" in log.refused(timed_out("run_a", 61, heard=0))
    log.accept(timed_out("run_a", 91, heard=30))


def test_a_late_time_out_cannot_undo_a_recovery(log: Log) -> None:
    """Two watchers (one evicted without knowing it): the log's order decides, and a verdict made
    before the recovery it did not see cannot apply after it."""
    log.accept(timed_out("run_a", 61, heard=0), recovered("run_a", 70, heard=65))
    assert log.state.runs["run_a"].status == "running"
    assert "was heard from after" in log.refused(timed_out("run_a", 71, heard=0))
    stale_recovery = recovered("run_a", 72, heard=65)
    log.accept(timed_out("run_a", 130, heard=66))  # silent again after 65
    assert "not heard from after it fell silent" in log.refused(stale_recovery)


def test_a_recovery_runs_the_run_again(log: Log) -> None:
    log.accept(timed_out("run_a", 61, heard=0), recovered("run_a", 70, heard=65))
    run = log.state.runs["run_a"]
    assert (run.status, run.error, run.completed_at, run.silent_since, run.heard_at) == (
        "running",
        None,
        None,
        None,
        at(65),
    )


def test_only_a_timed_out_run_recovers(log: Log) -> None:
    assert "did not time out" in log.refused(recovered("run_a", 10, heard=5))
    log.accept(RunFailed(**run_fields("run_a", 20), error="OOM"))
    assert "did not time out" in log.refused(recovered("run_a", 30, heard=25))
    assert "is failed, not running" in log.refused(timed_out("run_a", 90, heard=20))


@pytest.mark.parametrize("verdict", ["completed", "failed"])
def test_the_workers_own_verdict_replaces_a_time_out(log: Log, verdict: str) -> None:
    log.accept(timed_out("run_a", 61, heard=0))
    if verdict == "completed":
        log.accept(RunCompleted(**run_fields("run_a", 80)))
        assert log.state.runs["run_a"].error is None
    else:
        log.accept(RunFailed(**run_fields("run_a", 80), error="CUDA error"))
        assert log.state.runs["run_a"].error == "CUDA error"
    run = log.state.runs["run_a"]
    assert (run.status, run.silent_since) == (verdict, None)
    assert "has already" in log.refused(RunFailed(**run_fields("run_a", 81), error="again"))


def test_verdicts_on_unknown_runs_or_cancelled_experiments_are_refused(log: Log) -> None:
    unknown = log.apply(timed_out("run_x", 61, heard=0))
    assert unknown is not None and unknown.code == "not_found"
    log.accept(ExperimentCancelled(event_id="x", at=at(5), experiment_id="exp_1"))
    assert "cancelled" in log.refused(timed_out("run_a", 61, heard=0))


def test_the_open_runs_are_those_still_running_or_timed_out(log: Log) -> None:
    log.accept(RunStarted(**run_fields("run_b", 1)), RunStarted(**run_fields("run_c", 1)))
    log.accept(timed_out("run_a", 61, heard=0), RunCompleted(**run_fields("run_b", 62)))
    assert list(log.state.open_runs) == ["run_a", "run_c"]
    log.accept(RunFailed(**run_fields("run_a", 70), error="OOM"))
    assert list(log.state.open_runs) == ["run_c"]
    log.accept(ExperimentDeleted(event_id="d", at=at(80), experiment_id="exp_1"))
    assert log.state.open_runs == {}


def test_verdicts_read_back_from_the_log() -> None:
    from service.resources.fold import event_decoder, event_encoder

    for event in (timed_out("run_a", 61, heard=0), recovered("run_a", 70, heard=65)):
        assert event_decoder.decode(event_encoder.encode(event)) == event


# -- the judge ---------------------------------------------------------------------------------


def listened(state: Resources, since: dt.datetime = T0) -> dict[str, dt.datetime]:
    """Every open run listened for since `since`."""
    return dict.fromkeys(state.open_runs, since)


def verdicts(log: Log, now: float, heard: dict[str, float] | None = None, default: int = 300) -> list[Any]:
    """The judge's verdicts at `now`, having listened since T0 and heard everything up to `now`."""
    heard_at = {run_id: at(seconds) for run_id, seconds in (heard or {}).items()}
    return judge(log.state, heard_at, listened(log.state), at(now), default, at(now)).events


def test_a_run_is_judged_silent_once_its_limit_passed(log: Log) -> None:
    assert verdicts(log, 59.9) == []
    [verdict] = verdicts(log, 60)
    assert isinstance(verdict, RunTimedOut)
    assert (verdict.run_id, verdict.seconds, verdict.last_heard_at) == ("run_a", 60, T0)
    assert verdicts(log, 100, heard={"run_a": 50}) == []  # heard at 50: 50 s of silence


def test_the_experiments_limit_overrides_the_default_and_zero_means_never() -> None:
    log = Log()
    limits: dict[str, dict[str, Any]] = {"exp_own": {"run_stale_seconds": 10}, "exp_default": {}, "exp_never": {}}
    limits["exp_never"]["run_stale_seconds"] = 0
    for experiment_id, config in limits.items():
        created = ExperimentCreated(event_id=experiment_id, at=T0, experiment_id=experiment_id, name="E", config=config)
        log.accept(created)
        log.accept(RunStarted(**run_fields(f"run_{experiment_id}", 0, experiment_id)))
    assert {v.run_id: v.seconds for v in verdicts(log, 20, default=15)} == {"run_exp_own": 10, "run_exp_default": 15}
    assert {v.run_id for v in verdicts(log, 10**6, default=0)} == {"run_exp_own"}  # the server's 0: never, unless own


@pytest.mark.parametrize("bad", ["30", 1.5, True, -1, None])
def test_a_limit_the_api_would_refuse_counts_as_absent(bad: Any) -> None:
    log = Log()
    log.accept(
        ExperimentCreated(event_id="c", at=T0, experiment_id="exp_1", name="E", config={"run_stale_seconds": bad}),
        RunStarted(**run_fields("run_a", 0)),
    )
    assert [v.seconds for v in verdicts(log, 45, default=40)] == [40]


def test_silence_while_paused_does_not_count(log: Log) -> None:
    log.accept(ExperimentPaused(event_id="p", at=at(10), experiment_id="exp_1"))
    assert verdicts(log, 1000) == []
    log.accept(ExperimentResumed(event_id="r", at=at(1000), experiment_id="exp_1"))
    assert verdicts(log, 1059) == []
    assert judge(log.state, {}, listened(log.state), at(1059), 300, at(1059)).watched == {"exp_1": ["run_a"]}
    assert verdicts(log, 1070, heard={"run_a": 1030}) == []  # heard since it resumed
    [verdict] = verdicts(log, 1060)
    assert verdict.last_heard_at == at(1000)


def test_runs_of_a_cancelled_experiment_are_not_judged(log: Log) -> None:
    log.accept(ExperimentCancelled(event_id="x", at=at(5), experiment_id="exp_1"))
    result = judge(log.state, {}, listened(log.state), at(1000), 300, at(1000))
    assert (result.events, result.watched) == ([], {})


def test_a_run_never_heard_counts_as_heard_when_it_began_to_be_listened_for(log: Log) -> None:
    """Its records before were not read: it may have reported then, so it is given its full limit."""
    began = listened(log.state, at(500))
    assert judge(log.state, {}, began, at(559), 300, at(559)).events == []
    assert len(judge(log.state, {}, began, at(560), 300, at(560)).events) == 1


def test_a_run_not_listened_for_yet_is_not_judged_but_listened_for_from_now(log: Log) -> None:
    result = judge(log.state, {}, {}, at(10**6), 300, at(10**6))
    assert (result.events, result.watched) == ([], {"exp_1": ["run_a"]})


def test_a_timed_out_run_heard_after_its_silence_recovers(log: Log) -> None:
    log.accept(timed_out("run_a", 61, heard=0))
    assert verdicts(log, 100) == []
    assert verdicts(log, 100, heard={"run_a": 0}) == []  # nothing new
    [verdict] = verdicts(log, 100, heard={"run_a": 90})
    assert isinstance(verdict, RunRecovered) and verdict.heard_at == at(90)


def test_finished_runs_are_neither_judged_nor_watched(log: Log) -> None:
    log.accept(RunStarted(**run_fields("run_b", 0)), RunCompleted(**run_fields("run_b", 5)))
    result = judge(log.state, {}, listened(log.state), at(10), 300, at(10))
    assert result.watched == {"exp_1": ["run_a"]}
    log.accept(timed_out("run_a", 61, heard=0))  # a timed-out run is watched: it may be heard again
    assert judge(log.state, {}, listened(log.state), at(62), 300, at(62)).watched == {"exp_1": ["run_a"]}


def test_runs_that_cannot_time_out_now_are_not_listened_for() -> None:
    """Never (a limit of 0), or paused (heard or not, the clock restarts when it resumes)."""
    log = Log()
    log.accept(
        ExperimentCreated(event_id="n", at=T0, experiment_id="exp_never", name="E", config={"run_stale_seconds": 0}),
        RunStarted(**run_fields("run_n", 0, "exp_never")),
        ExperimentCreated(event_id="p", at=T0, experiment_id="exp_paused", name="E"),
        RunStarted(**run_fields("run_p", 0, "exp_paused")),
        ExperimentPaused(event_id="pp", at=at(1), experiment_id="exp_paused"),
    )
    assert judge(log.state, {}, listened(log.state), at(10**6), 300, at(10**6)) == Verdicts([], {})


# -- the experiment's config -------------------------------------------------------------------


@pytest.mark.parametrize("good", [None, 0, 1, 300, 30 * 86_400])
def test_valid_limits(good: Any) -> None:
    assert config_problem({"run_stale_seconds": good}) is None
    assert config_problem({"other": "anything"}) is None


@pytest.mark.parametrize("bad", ["300", 1.5, 300.0, True, -1, 30 * 86_400 + 1, [300], {"s": 1}])
def test_invalid_limits(bad: Any) -> None:
    assert config_problem({"run_stale_seconds": bad}) == LIMIT_RULE


# -- what the listener hears -------------------------------------------------------------------

_record_encoder = msgspec.json.Encoder()


def record(experiment_id: str, run_ids: list[str], ms: int, offset: int = 0, **metadata: str) -> StoredRecord:
    """A v2 telemetry record as ingest appends it: one event per run id ("" for none)."""
    events = [
        TelemetryEvent(
            event_name=["crucible", "run", "progress"],
            measurements={"loss": 0.5},
            metadata={"experiment_id": experiment_id, **({"run_id": run_id} if run_id else {}), **metadata},
            timestamp=T0,
            id=f"e{n}",
        )
        for n, run_id in enumerate(run_ids)
    ]
    value = _record_encoder.encode(TelemetryRecord(received_at=T0, batch_id="", events=events))
    headers = (("content-type", RECORD_CONTENT_TYPE), (RECORD_EVENTS_HEADER, str(len(events)).encode()))
    return StoredRecord(TELEMETRY_TOPIC, 0, offset, experiment_id.encode(), value, headers, ms)


def ms(seconds: float) -> int:
    return int(at(seconds).timestamp() * 1000)


def test_runs_are_heard_at_their_records_log_time_rounded_up_to_the_rounds_end() -> None:
    heartbeats = RunHeartbeats()
    heartbeats.watch({"exp_1": ["run_a", "run_b"], "exp_2": ["run_c"]}, since=T0)
    heartbeats.hear(record("exp_1", ["run_a", "run_a"], ms(3)))
    heartbeats.hear(record("exp_2", ["run_a"], ms(4)))  # another experiment's record: not exp_1's run_a
    heartbeats.hear(record("exp_1", ["run_b"], ms(12)))  # read after the round's horizon
    heartbeats.read_up_to(at(10))
    heartbeats.close_round()
    assert heartbeats.heard == {"run_a": at(10), "run_b": at(12)}
    heartbeats.hear(record("exp_1", [""], ms(15), model="run_a"))  # a record without run ids names none
    heartbeats.read_up_to(at(20))
    heartbeats.close_round()
    assert heartbeats.heard == {"run_a": at(10), "run_b": at(12)}


@pytest.mark.parametrize("watched", [2, SEARCH_AT_MOST + 3], ids=["searched", "decoded"])
def test_a_record_of_several_runs_is_read_for_each_whether_searched_or_decoded(watched: int) -> None:
    runs = [f"run_{n}" for n in range(watched)]
    heartbeats = RunHeartbeats()
    heartbeats.watch({"exp_1": runs}, since=T0)
    heartbeats.hear(record("exp_1", [runs[0], "run_other", runs[-1], ""], ms(1)))
    heartbeats.read_up_to(at(1))
    heartbeats.close_round()
    assert set(heartbeats.heard) == {runs[0], runs[-1]}


def test_run_ids_that_prefix_each_other_are_told_apart() -> None:
    heartbeats = RunHeartbeats()
    heartbeats.watch({"exp_1": ["run_1", "run_10"]}, since=T0)
    heartbeats.hear(record("exp_1", ["run_10"], ms(1)))
    heartbeats.read_up_to(at(1))
    heartbeats.close_round()
    assert set(heartbeats.heard) == {"run_10"}


def test_once_every_watched_run_was_heard_the_rounds_other_records_are_not_read() -> None:
    heartbeats = RunHeartbeats()
    heartbeats.watch({"exp_1": ["run_a"]}, since=T0)
    heartbeats.hear(record("exp_1", ["run_a"], ms(1)))
    unreadable = StoredRecord(TELEMETRY_TOPIC, 0, 1, b"exp_1", b"not json", record("exp_1", [], 0).headers, ms(2))
    heartbeats.hear(unreadable)  # skipped unread: run_a was heard this round
    heartbeats.read_up_to(at(2))
    heartbeats.close_round()
    assert heartbeats.heard == {"run_a": at(2)}
    heartbeats.watch({"exp_1": [f"run_{n}" for n in range(SEARCH_AT_MOST + 1)]}, since=T0)
    heartbeats.hear(unreadable)  # now it must be decoded, and cannot be: skipped with a warning
    heartbeats.read_up_to(at(3))
    heartbeats.close_round()
    assert heartbeats.heard == {}


def test_each_run_is_listened_for_from_the_first_round_that_watched_it() -> None:
    heartbeats = RunHeartbeats()
    heartbeats.watch({"exp_1": ["run_a"]}, since=at(5))
    heartbeats.watch({"exp_1": ["run_a", "run_b"], "exp_2": ["run_c"]}, since=at(10))
    assert heartbeats.began == {"run_a": at(5), "run_b": at(10), "run_c": at(10)}
    heartbeats.watch({"exp_2": ["run_c"]}, since=at(15))
    assert heartbeats.began == {"run_c": at(10)}


def test_runs_no_longer_watched_are_forgotten() -> None:
    heartbeats = RunHeartbeats()
    heartbeats.watch({"exp_1": ["run_a", "run_b"]}, since=T0)
    heartbeats.hear(record("exp_1", ["run_a", "run_b"], ms(1)))
    heartbeats.read_up_to(at(1))
    heartbeats.close_round()
    assert set(heartbeats.heard) == {"run_a", "run_b"}
    heartbeats.watch({"exp_1": ["run_b"]}, since=T0)
    heartbeats.read_up_to(at(2))
    heartbeats.close_round()
    assert set(heartbeats.heard) == {"run_b"}
