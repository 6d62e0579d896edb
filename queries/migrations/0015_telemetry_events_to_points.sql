-- Every row inserted into telemetry_events (from the records' view of 0010, or a
-- format-v1 record inserted directly) becomes one telemetry_points row per measurement.
-- A views' chain keeps the insert's deduplication token: a re-inserted offset range is a
-- no-op here as it is in telemetry_events.
CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_events_to_points TO telemetry_points AS
SELECT
    experiment_id,
    measurement.1 AS metric,
    timestamp,
    measurement.2 AS value,
    event_name,
    run_id,
    model,
    if(mapContains(measurements, 'step'), measurements['step'], NULL) AS step,
    if(mapContains(measurements, 'epoch'), measurements['epoch'], NULL) AS epoch,
    log_partition,
    log_offset,
    log_index
FROM telemetry_events
ARRAY JOIN measurements AS measurement
