-- The latest value of each measurement the given runs reported in their progress and
-- completion events: latest by the worker's timestamp, then by step, then by log
-- position and place in the record (events of one batch can share a timestamp). `keys`
-- limits the measurements (empty: all of them), e.g. to `progress` for summaries.
SELECT
    run_id,
    measure_key AS key,
    argMax(measure_value, (timestamp, measurements['step'], log_partition, log_offset, log_index)) AS value
FROM telemetry_events
ARRAY JOIN mapKeys(measurements) AS measure_key, mapValues(measurements) AS measure_value
WHERE experiment_id IN {experiment_ids:Array(String)}
  AND run_id IN {run_ids:Array(String)}
  AND event_name IN ('crucible.run.progress', 'crucible.run.completed')
  AND (empty({keys:Array(String)}) OR has({keys:Array(String)}, measure_key))
GROUP BY run_id, measure_key
