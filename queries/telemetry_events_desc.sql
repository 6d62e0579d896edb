-- A page of events, newest first. The cursor is the (sort value, id) of the last
-- row of the previous page; `snapshot` hides events received after the first page,
-- so pages do not shift while events keep arriving.
SELECT id, event_name, measurements, metadata, timestamp, received_at, data
FROM telemetry_events
WHERE ({event_name:Nullable(String)} IS NULL OR event_name = {event_name:Nullable(String)})
  AND ({experiment_id:Nullable(String)} IS NULL OR experiment_id = {experiment_id:Nullable(String)})
  AND ({run_id:Nullable(String)} IS NULL OR run_id = {run_id:Nullable(String)})
  AND ({model:Nullable(String)} IS NULL OR model = {model:Nullable(String)})
  AND ({after:Nullable(DateTime64(6))} IS NULL OR timestamp >= {after:Nullable(DateTime64(6))})
  AND ({before:Nullable(DateTime64(6))} IS NULL OR timestamp < {before:Nullable(DateTime64(6))})
  AND ({snapshot:Nullable(DateTime64(6))} IS NULL OR received_at <= {snapshot:Nullable(DateTime64(6))})
  AND ({cursor_time:Nullable(DateTime64(6))} IS NULL
       OR ({sort_column:Identifier}, id) < ({cursor_time:Nullable(DateTime64(6))}, {cursor_id:String}))
ORDER BY {sort_column:Identifier} DESC, id DESC
LIMIT {limit:UInt32} OFFSET {offset:UInt64}
