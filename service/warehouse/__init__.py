"""Log → ClickHouse, and reading it back. `client` runs the SQL of `queries/` on chDB or
a ClickHouse server; `writer` turns telemetry records into rows, inserts and commits
(deduplicating retried batches with `retry_window`); `backpressure` lets ingest wait for
a writer that falls behind; `audit` copies the resources log into `resource_events`;
`migrations` applies `queries/migrations`; `stream` reads a whole answer piece by piece
for exports; `event_rows` makes warehouse rows into the events the API shows.

Imports: `service.core`, `service.settings`, `service.log`.
"""
