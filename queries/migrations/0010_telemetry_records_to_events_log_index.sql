-- The view that turns records into events fills log_index (0009) from each event's
-- place in its record. MODIFY QUERY swaps the view's query in one step, so no insert
-- runs between a dropped view and its replacement and loses its events.
ALTER TABLE telemetry_records_to_events MODIFY QUERY
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
    log_offset,
    event_number - 1 AS log_index
FROM telemetry_records
ARRAY JOIN events AS event, arrayEnumerate(events) AS event_number
