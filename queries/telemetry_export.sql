-- The events of an export, in the table's sort order: ClickHouse reads them in that
-- order, so an export is never sorted in memory however large it is (the log position
-- only orders events that share an id and a time). service/export_query.py selects the
-- requested fields from these columns. `snapshot` leaves out events received after the
-- export began; with `bounded`, only events below the log positions `ends` (one per
-- partition in `partitions`) are kept: those an experiment export says it reflects.
SELECT id, event_name, experiment_id, run_id, model, timestamp, received_at, measurements, metadata, data
FROM telemetry_events
WHERE ({event_name:Nullable(String)} IS NULL OR event_name = {event_name:Nullable(String)})
  AND ({experiment_id:Nullable(String)} IS NULL OR experiment_id = {experiment_id:Nullable(String)})
  AND ({run_id:Nullable(String)} IS NULL OR run_id = {run_id:Nullable(String)})
  AND ({model:Nullable(String)} IS NULL OR model = {model:Nullable(String)})
  AND ({after:Nullable(DateTime64(6))} IS NULL OR timestamp >= {after:Nullable(DateTime64(6))})
  AND ({before:Nullable(DateTime64(6))} IS NULL OR timestamp < {before:Nullable(DateTime64(6))})
  AND ({snapshot:Nullable(DateTime64(6))} IS NULL OR received_at <= {snapshot:Nullable(DateTime64(6))})
  AND (NOT {bounded:Bool}
       OR log_offset < arrayElement({ends:Array(UInt64)}, indexOf({partitions:Array(UInt32)}, log_partition)))
ORDER BY experiment_id, timestamp, id, log_partition, log_offset
