-- One experiment's events for its export, below the log positions the export says it
-- reflects (`ends`, one per partition in `partitions`), in a fixed order: time, id, then
-- log position for events that share both. experiment_id leads the table's sort key, so
-- ClickHouse reads them in that order. service/exports/query.py selects the fields.
SELECT id, event_name, experiment_id, run_id, model, timestamp, received_at, measurements, metadata, data
FROM telemetry_events
WHERE experiment_id = {experiment_id:String}
  AND log_offset < arrayElement({ends:Array(UInt64)}, indexOf({partitions:Array(UInt32)}, log_partition))
ORDER BY experiment_id, timestamp, id, log_partition, log_offset
