-- Each record of a batch sent with an Idempotency-Key also becomes a telemetry_batches
-- row, in the same insert as its events: the warehouse holds the row exactly when it
-- holds the events, and a re-inserted offset range (same deduplication token) is a
-- no-op here as well. Every event of a record has the record's experiment_id.
CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_records_to_batches TO telemetry_batches AS
SELECT
    log_partition,
    log_offset,
    batch_id,
    events[1].metadata['experiment_id'] AS experiment_id,
    fromUnixTimestamp64Milli(toInt64(log_timestamp_ms), 'UTC') AS appended_at
FROM telemetry_records
WHERE idempotent
