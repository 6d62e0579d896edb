-- Every insert into telemetry_points (the view of 0015) folds its run points into
-- run_latest_values: one row per (run, measurement) of the insert, merged in the
-- background and at read time.
CREATE MATERIALIZED VIEW IF NOT EXISTS telemetry_points_to_run_latest_values TO run_latest_values AS
SELECT
    experiment_id,
    run_id,
    metric,
    argMaxState(value, (timestamp, ifNull(step, 0), log_partition, log_offset, log_index)) AS latest
FROM telemetry_points
WHERE event_name IN ('crucible.run.progress', 'crucible.run.completed')
GROUP BY experiment_id, run_id, metric
