-- Per experiment and measurement: how many values, their mean and sample standard
-- deviation, for a comparison report. metrics empty: every measurement; event_name NULL:
-- every event. `from_runs` counts the values reported by run progress or completion and
-- by evaluation events (crucible.eval*): the measurements a report shows by default.
SELECT
    experiment_id,
    metric,
    count() AS n,
    avg(value) AS mean,
    stddevSampStable(value) AS std_dev,
    countIf(event_name IN ('crucible.run.progress', 'crucible.run.completed')
            OR startsWith(event_name, 'crucible.eval')) AS from_runs
FROM telemetry_events
ARRAY JOIN mapKeys(measurements) AS metric, mapValues(measurements) AS value
WHERE experiment_id IN {experiment_ids:Array(String)}
  AND (empty({metrics:Array(String)}) OR has({metrics:Array(String)}, metric))
  AND ({event_name:Nullable(String)} IS NULL OR event_name = {event_name:Nullable(String)})
GROUP BY experiment_id, metric
ORDER BY experiment_id, metric
