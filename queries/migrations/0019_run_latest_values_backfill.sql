-- The latest values of the points stored before 0018's view existed. Running it twice (cut
-- off before it was marked applied) changes nothing: argMax of the same points again.
INSERT INTO run_latest_values
SELECT
    experiment_id,
    run_id,
    metric,
    argMaxState(value, (timestamp, ifNull(step, 0), log_partition, log_offset, log_index)) AS latest
FROM telemetry_points
WHERE event_name IN ('crucible.run.progress', 'crucible.run.completed')
GROUP BY experiment_id, run_id, metric
