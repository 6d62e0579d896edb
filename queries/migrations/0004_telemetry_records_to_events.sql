-- Every record inserted into telemetry_records becomes one telemetry_events row per
-- event. An insert's deduplication token carries over to telemetry_events, so a
-- re-inserted offset range is still a no-op there.
CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_records_to_events TO telemetry_events AS
SELECT
    event.id AS id,
    arrayStringConcat(event.event_name, '.') AS event_name,
    event.metadata['experiment_id'] AS experiment_id,
    event.metadata['run_id'] AS run_id,
    event.metadata['model'] AS model,
    event.timestamp AS timestamp,
    received_at,
    event.measurements AS measurements,
    event.metadata AS metadata,
    event.data AS data,
    batch_id,
    log_partition,
    log_offset
FROM telemetry_records
ARRAY JOIN events AS event
