-- The latest value of each measurement the given runs reported in their progress and
-- completion events: latest by the worker's timestamp, then by step (0 where the event
-- has none), then by log position and place in the record (events of one batch can
-- share a timestamp). `keys` limits the measurements (empty: all of them), e.g. to
-- `progress` for summaries. One row of telemetry_points (0014) per measurement.
-- Two steps: the latest timestamp of each (run, measurement), then the full order among
-- the rows at that timestamp only. argMax over the whole tuple for every row took 6x as
-- long (a run of 1 M steps: 390 against 62 ms).
WITH latest AS (
    SELECT run_id, metric, max(timestamp) AS timestamp
    FROM telemetry_points
    WHERE experiment_id IN {experiment_ids:Array(String)}
      AND run_id IN {run_ids:Array(String)}
      AND event_name IN ('crucible.run.progress', 'crucible.run.completed')
      AND (empty({keys:Array(String)}) OR has({keys:Array(String)}, metric))
    GROUP BY run_id, metric
)
SELECT
    run_id,
    metric AS key,
    argMax(value, (ifNull(step, 0), log_partition, log_offset, log_index)) AS value
FROM telemetry_points
WHERE experiment_id IN {experiment_ids:Array(String)}
  AND run_id IN {run_ids:Array(String)}
  AND event_name IN ('crucible.run.progress', 'crucible.run.completed')
  AND (run_id, metric, timestamp) IN (SELECT run_id, metric, timestamp FROM latest)
GROUP BY run_id, metric
