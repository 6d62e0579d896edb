"""Live fan-out in each API process: the `hub` tails the logs and pushes to its own
WebSockets and telemetry streams; `channels` names the topics and who may join them;
`experiment_feed` and `dashboard_feed` say what those channels push; `events` makes log
records into the events the API shows; `phoenix` is the Phoenix channels wire format.

Imports: `service.core`, `service.settings`, `service.log`, `service.warehouse`,
`service.resources`.
"""
