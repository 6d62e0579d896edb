-- One row per measurement of an event: the read path of percentiles, aggregates and
-- metric histories. In telemetry_events a measurement sits in a map, and reading one
-- key reads every key and value of each row in range; here (experiment_id, metric,
-- timestamp) leads the sort key, so a query reads only the rows of the metric it asks
-- for and only the columns it uses. Filled by the view of 0015, from every insert into
-- telemetry_events. step and epoch repeat the event's own step and epoch measurements
-- (NULL where it has none), for learning curves in step order. Settings as
-- telemetry_events' (0007, 0008): compact small parts, vertical merges.
CREATE TABLE IF NOT EXISTS telemetry_points
(
    experiment_id LowCardinality(String),
    metric LowCardinality(String),
    timestamp DateTime64(6, 'UTC'),
    value Float64,
    event_name LowCardinality(String),
    run_id String,
    model LowCardinality(String),
    step Nullable(Float64),
    epoch Nullable(Float64),
    log_partition UInt32,
    log_offset UInt64,
    log_index UInt32
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (experiment_id, metric, timestamp)
SETTINGS non_replicated_deduplication_window = 10000,
    min_rows_for_wide_part = 1000000,
    vertical_merge_algorithm_min_columns_to_activate = 1
