-- A page of one run's log lines, oldest first, at or above a severity. The cursor is
-- the (timestamp, id) of the previous page's last line.
SELECT timestamp, metadata['level'] AS level, metadata['message'] AS message, id
FROM telemetry_events
WHERE experiment_id = {experiment_id:String}
  AND run_id = {run_id:String}
  AND event_name = 'crucible.run.log'
  AND indexOf(['debug', 'info', 'warning', 'error'], metadata['level']) >= {min_severity:UInt8}
  AND ({since:Nullable(DateTime64(6))} IS NULL OR timestamp >= {since:Nullable(DateTime64(6))})
  AND ({cursor_time:Nullable(DateTime64(6))} IS NULL
       OR (timestamp, id) > ({cursor_time:Nullable(DateTime64(6))}, {cursor_id:String}))
ORDER BY timestamp, id
LIMIT {limit:UInt32}
