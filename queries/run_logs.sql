-- A page of one run's log lines, oldest first (lines of one batch in the order sent),
-- at or above a severity. The cursor is the previous page's last line's time and log position.
SELECT timestamp, metadata['level'] AS level, metadata['message'] AS message, log_partition, log_offset, log_index
FROM telemetry_events
WHERE experiment_id = {experiment_id:String}
  AND run_id = {run_id:String}
  AND event_name = 'crucible.run.log'
  AND indexOf(['debug', 'info', 'warning', 'error'], metadata['level']) >= {min_severity:UInt8}
  AND ({since:Nullable(DateTime64(6))} IS NULL OR timestamp >= {since:Nullable(DateTime64(6))})
  AND ({cursor_time:Nullable(DateTime64(6))} IS NULL
       OR (timestamp, log_partition, log_offset, log_index)
          > ({cursor_time:Nullable(DateTime64(6))}, {cursor_partition:UInt32}, {cursor_offset:UInt64}, {cursor_index:UInt32}))
ORDER BY timestamp, log_partition, log_offset, log_index
LIMIT {limit:UInt32}
