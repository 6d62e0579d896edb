"""Experiments, runs, models and API keys as a fold of the `crucible.resources` log.
`fold` is the state, its rules and `apply`; `projector` folds the log into memory in
every API process; `commands` is the one path of every change (check, append, wait for
the fold); `keys` and `credentials` are the API keys, their secrets and sessions;
`run_events` says which reserved telemetry events become resource events; `run_watch`
fails runs whose worker fell silent and revives them when heard again (in one API process
at a time), with `run_heartbeats` (what the telemetry log says of each run) and
`run_silence` (each experiment's limit, and the verdicts).

Imports: `service.core`, `service.settings`, `service.log`, `service.warehouse`.
"""
