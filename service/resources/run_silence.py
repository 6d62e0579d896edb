"""Runs whose worker fell silent: each experiment's limit, and the verdicts on its runs (pure rules).

A running run that no telemetry was heard from for its limit is failed with a
`RunTimedOut`; a run that timed out and is heard from again runs again with a
`RunRecovered`. The limit is the experiment's `config.run_stale_seconds`, else the
server's `--run-stale-seconds`; 0 means never. Who hears what, and when, is
service/resources/run_watch.py; this module only judges what it was told.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeGuard

from schemas.resources import RunRecovered, RunTimedOut
from service.resources.fold import Experiment, Resources, Run
from service.settings import RUN_STALE_SECONDS_MAX

CONFIG_KEY = "run_stale_seconds"
# Who made a verdict, in the resources' history: the service itself, not an API key.
ACTOR = "crucible:run-watch"
LIMIT_RULE = (
    f"must be a whole number of seconds from 0 (never) to {RUN_STALE_SECONDS_MAX}, or null (the server's default)"
)

Verdict = RunTimedOut | RunRecovered


def config_problem(config: Mapping[str, Any]) -> str | None:
    """What is wrong with an experiment config's run limit, or None (absent and null are fine)."""
    value = config.get(CONFIG_KEY)
    if value is None or _is_limit(value):
        return None
    return LIMIT_RULE


def limit_of(experiment: Experiment, default_seconds: int) -> int:
    """The seconds of silence after which the experiment's runs fail (0: never).

    A value the API would refuse now, kept in an experiment created before the rule,
    counts as absent: the log is never rewritten."""
    value = experiment.config.get(CONFIG_KEY)
    return value if _is_limit(value) else default_seconds


def _is_limit(value: object) -> TypeGuard[int]:
    # bool is an int in Python, and `true` is no number of seconds.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= RUN_STALE_SECONDS_MAX


@dataclass(frozen=True, slots=True)
class Verdicts:
    """A round's verdicts, each one the fold accepts as the state stands, and the runs to listen for."""

    events: list[Verdict]
    watched: dict[str, list[str]]  # experiment id → its runs that are running (and judged) or timed out


class _Rule(NamedTuple):
    """An experiment's rule for one round (a tuple: made once per experiment and round, cheaply)."""

    limit: int
    listens: bool  # its running runs are judged and listened for (not paused, a limit other than 0)
    # A running run last heard at or before this instant fell silent (None: none can have yet,
    # the experiment resumed less than its limit ago).
    silent_if_heard_by: dt.datetime | None
    resumed_at: dt.datetime | None  # silence before it does not count


_CANCELLED = _Rule(0, False, None, None)  # its runs no longer change (the fold refuses their events)


def _rule(experiment: Experiment, default_seconds: int, cutoffs: dict[int, dt.datetime], horizon: dt.datetime) -> _Rule:
    """`cutoffs`: limit → the horizon less that limit, computed once per round for each limit in use."""
    if experiment.status == "cancelled":
        return _CANCELLED
    limit = limit_of(experiment, default_seconds)
    resumed_at = experiment.resumed_at
    if experiment.status == "paused" or limit == 0:
        return _Rule(limit, False, None, resumed_at)
    silent_if_heard_by = cutoffs.get(limit)
    if silent_if_heard_by is None:
        silent_if_heard_by = cutoffs[limit] = horizon - dt.timedelta(seconds=limit)
    if resumed_at is not None and resumed_at > silent_if_heard_by:
        return _Rule(limit, True, None, resumed_at)
    return _Rule(limit, True, silent_if_heard_by, resumed_at)


def judge(
    state: Resources,
    heard: Mapping[str, dt.datetime],
    began: Mapping[str, dt.datetime],
    horizon: dt.datetime,
    default_seconds: int,
    now: dt.datetime,
) -> Verdicts:
    """Which runs fell silent and which were heard again.

    The listener has heard everything up to `horizon`: `heard`, when each run was last heard
    from, and `began`, since when it listens for each. A run counts as heard at the latest of
    those and the last time the log heard it; one not listened for yet cannot be judged
    silent. Runs every round over the open runs (running, or timed out): the per-run work is
    a few lookups and comparisons."""
    events: list[Verdict] = []
    rules: dict[str, tuple[_Rule, list[str]]] = {}  # experiment id → its rule, its runs listened for
    cutoffs: dict[int, dt.datetime] = {}
    runs = state.runs
    for run_id in state.open_runs:
        run = runs[run_id]
        experiment_rule = rules.get(run.experiment_id)
        if experiment_rule is None:
            experiment = state.experiments[run.experiment_id]
            experiment_rule = rules[run.experiment_id] = (_rule(experiment, default_seconds, cutoffs, horizon), [])
        rule, listened_for = experiment_rule
        if rule is _CANCELLED:
            continue
        verdict: Verdict | None = None
        if run.silent_since is not None:  # timed out: listened for, it may be heard again
            heard_at = heard.get(run_id)
            if heard_at is not None and heard_at > run.silent_since:
                verdict = _recovered(run, heard_at, now)
        elif not rule.listens:
            continue
        elif (cutoff := rule.silent_if_heard_by) is not None:
            heard_at = heard.get(run_id)
            if heard_at is None or heard_at <= cutoff:  # the usual case, heard since the cutoff, ends here
                listened_from = began.get(run_id, horizon)
                last = max(heard_at or listened_from, listened_from, run.last_heard())
                if last <= cutoff:
                    verdict = _timed_out(run, rule.limit, max(last, rule.resumed_at or last), now)
        listened_for.append(run_id)
        if verdict is not None and state.check(verdict) is None:
            events.append(verdict)
    watched = {experiment_id: run_ids for experiment_id, (_, run_ids) in rules.items() if run_ids}
    return Verdicts(events, watched)


def _timed_out(run: Run, limit: int, last_heard_at: dt.datetime, now: dt.datetime) -> RunTimedOut:
    return RunTimedOut(
        event_id=uuid.uuid4().hex,
        at=now,
        actor=ACTOR,
        run_id=run.id,
        experiment_id=run.experiment_id,
        reported_at=now,
        seconds=limit,
        last_heard_at=last_heard_at,
    )


def _recovered(run: Run, heard_at: dt.datetime, now: dt.datetime) -> RunRecovered:
    return RunRecovered(
        event_id=uuid.uuid4().hex,
        at=now,
        actor=ACTOR,
        run_id=run.id,
        experiment_id=run.experiment_id,
        reported_at=now,
        heard_at=heard_at,
    )
