-- The latest value of each measurement the given runs reported in their progress and
-- completion events, from run_latest_values (0017): latest by the worker's timestamp, then
-- by step (0 where the event has none), then by log position and place in the record
-- (events of one batch can share a timestamp). `keys` limits the measurements (empty: all
-- of them), e.g. to `progress` for summaries.
SELECT
    run_id,
    metric AS key,
    argMaxMerge(latest) AS value
FROM run_latest_values
WHERE experiment_id IN {experiment_ids:Array(String)}
  AND run_id IN {run_ids:Array(String)}
  AND (empty({keys:Array(String)}) OR has({keys:Array(String)}, metric))
GROUP BY run_id, metric
