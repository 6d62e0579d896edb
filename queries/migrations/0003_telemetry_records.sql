-- Log records of crucible.telemetry as the writer inserts them: one row per record
-- (a batch's events for one experiment), with its log position. The Null engine
-- keeps nothing: the materialized view of 0004 turns each record into event rows.
-- ClickHouse, not Python, then derives the promoted columns and joins event names,
-- and the writer prefixes one position per record instead of stamping every row.
CREATE TABLE IF NOT EXISTS telemetry_records
(
    log_partition UInt32,
    log_offset UInt64,
    received_at DateTime64(6, 'UTC'),
    batch_id String,
    events Array(Tuple(
        id String,
        event_name Array(String),
        measurements Map(LowCardinality(String), Float64),
        metadata Map(LowCardinality(String), String),
        timestamp DateTime64(6, 'UTC'),
        data String))
)
ENGINE = Null
