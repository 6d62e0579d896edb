-- The events of a telemetry export, in the order ClickHouse reads them: sorting the whole
-- table would more than double the CPU of a large export and serialize it on one core.
-- service/exports/query.py selects the requested fields from these columns; `snapshot`
-- leaves out events received after the export began.
SELECT id, event_name, experiment_id, run_id, model, timestamp, received_at, measurements, metadata, data
FROM telemetry_events
WHERE ({event_name:Nullable(String)} IS NULL OR event_name = {event_name:Nullable(String)})
  AND ({experiment_id:Nullable(String)} IS NULL OR experiment_id = {experiment_id:Nullable(String)})
  AND ({run_id:Nullable(String)} IS NULL OR run_id = {run_id:Nullable(String)})
  AND ({model:Nullable(String)} IS NULL OR model = {model:Nullable(String)})
  AND ({after:Nullable(DateTime64(6))} IS NULL OR timestamp >= {after:Nullable(DateTime64(6))})
  AND ({before:Nullable(DateTime64(6))} IS NULL OR timestamp < {before:Nullable(DateTime64(6))})
  AND ({snapshot:Nullable(DateTime64(6))} IS NULL OR received_at <= {snapshot:Nullable(DateTime64(6))})
