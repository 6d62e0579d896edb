"""Prometheus metrics of the process, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_ACCEPTED = Counter("crucible_events_accepted_total", "Telemetry events accepted into the log")
EVENTS_REJECTED = Counter("crucible_events_rejected_total", "Telemetry events refused at validation")
INGEST_BATCHES = Counter("crucible_ingest_batches_total", "Ingest requests by answer", ["status"])
APPEND_SECONDS = Histogram(
    "crucible_log_append_seconds",
    "Time for an append to become durable",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INGEST_BACKPRESSURE_SECONDS = Histogram(
    "crucible_ingest_backpressure_seconds",
    "Time a batch waited for the warehouse writer to catch up before its append",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WRITER_LAG = Gauge("crucible_writer_lag_records", "Log records not yet committed by the warehouse writer")
INSERT_SECONDS = Histogram(
    "crucible_warehouse_insert_seconds",
    "Time of one warehouse insert",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ROWS_INSERTED = Counter("crucible_warehouse_rows_inserted_total", "Rows inserted into the warehouse")
INSERT_FAILURES = Counter("crucible_warehouse_insert_failures_total", "Warehouse inserts that failed", ["reason"])
SHARED_READS = Counter(
    "crucible_warehouse_shared_reads_total",
    "Dashboard queries answered by an identical query already in flight instead of running again",
)
YIELDING_QUERIES = Counter(
    "crucible_warehouse_yielding_queries_total",
    "Embedded warehouse queries run on one thread below the inserts, because the writer was under load",
)
DLQ_RECORDS = Counter("crucible_dlq_records_total", "Log records sent to the dead-letter topic")
RETRIES_DROPPED = Counter(
    "crucible_writer_retries_dropped_total",
    "Log records the writer did not insert: a retried batch (same Idempotency-Key) stored already",
)
LOG_OFFSET_GAPS = Counter(
    "crucible_log_offset_gaps_total",
    "Holes in a partition's offsets met by a consumer: filled (read again until the record came) or passed",
    ["outcome"],
)
RESOURCES_POSITION = Gauge("crucible_resources_position", "Next crucible.resources offset this process will apply")
AUTH_FAILURES = Counter("crucible_auth_failures_total", "Requests refused by authentication or scope", ["status"])
RATE_LIMITED = Counter("crucible_rate_limited_total", "Requests refused by a rate limit", ["limit"])
AUDIT_POSITION = Gauge("crucible_audit_position", "Next crucible.resources offset the audit writer will copy")
LIVE_CONNECTIONS = Gauge("crucible_live_connections", "Open live connections (WebSocket, SSE)", ["transport"])
LIVE_SLOW_DISCONNECTS = Counter(
    "crucible_live_slow_disconnects_total",
    "Live connections closed because they fell further behind than --live-send-queue-bytes",
    ["transport"],
)
LIVE_TELEMETRY_RECORDS = Counter(
    "crucible_live_telemetry_records_total",
    "Telemetry log records the live hub read: decoded for a subscriber, or skipped (nobody wanted them)",
    ["outcome"],
)
RUN_WATCHING = Gauge(
    "crucible_run_watching",
    "1 while this process is the one that watches runs for silence (it owns crucible-run-watch's partition)",
)
RUN_VERDICTS = Counter(
    "crucible_run_verdicts_total",
    "Runs this process failed for want of telemetry (timed_out) or revived when heard again (recovered)",
    ["verdict"],
)
