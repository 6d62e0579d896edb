-- How many of one run's log lines are at or above a severity (since a time): the
-- `total` of every page of /runs/:id/logs.
SELECT count() AS total
FROM telemetry_events
WHERE experiment_id = {experiment_id:String}
  AND run_id = {run_id:String}
  AND event_name = 'crucible.run.log'
  AND indexOf(['debug', 'info', 'warning', 'error'], metadata['level']) >= {min_severity:UInt8}
  AND ({since:Nullable(DateTime64(6))} IS NULL OR timestamp >= {since:Nullable(DateTime64(6))})
