-- One row per stored log record of a batch sent with an Idempotency-Key: which batch,
-- for which experiment (the record's key), at which log position, appended when. A
-- writer that takes a partition reads its latest rows back to know which retried
-- records to drop (queries/writer_retry_window.sql). One row per record, not per
-- event: a thousandth of telemetry_events' rows for batches of a thousand events.
CREATE TABLE IF NOT EXISTS telemetry_batches
(
    log_partition UInt32,
    log_offset UInt64,
    batch_id String,
    experiment_id String,
    appended_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (log_partition, log_offset)
SETTINGS non_replicated_deduplication_window = 10000
