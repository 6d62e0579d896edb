-- The most recent `limit` log lines of one run at or above a severity, newest first
-- (the handler turns them oldest first).
SELECT timestamp, metadata['level'] AS level, metadata['message'] AS message, log_partition, log_offset, log_index
FROM telemetry_events
WHERE experiment_id = {experiment_id:String}
  AND run_id = {run_id:String}
  AND event_name = 'crucible.run.log'
  AND indexOf(['debug', 'info', 'warning', 'error'], metadata['level']) >= {min_severity:UInt8}
  AND ({since:Nullable(DateTime64(6))} IS NULL OR timestamp >= {since:Nullable(DateTime64(6))})
ORDER BY timestamp DESC, log_partition DESC, log_offset DESC, log_index DESC
LIMIT {limit:UInt32}
