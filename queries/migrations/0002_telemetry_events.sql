-- Telemetry events, one row per accepted event.
-- experiment_id leads the sort key: dashboards ask about one experiment at a time.
-- log_partition/log_offset say which log record a row came from; the writer uses
-- them to find where a previous writer stopped, and deduplication tokens make a
-- re-inserted range a no-op.
CREATE TABLE IF NOT EXISTS telemetry_events
(
    id String,
    event_name LowCardinality(String),
    experiment_id LowCardinality(String),
    run_id String,
    model LowCardinality(String),
    timestamp DateTime64(6, 'UTC'),
    received_at DateTime64(6, 'UTC'),
    measurements Map(LowCardinality(String), Float64),
    metadata Map(LowCardinality(String), String),
    data String,
    batch_id String,
    log_partition UInt32,
    log_offset UInt64,
    INDEX log_offset_minmax log_offset TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (experiment_id, timestamp, id)
SETTINGS non_replicated_deduplication_window = 10000
