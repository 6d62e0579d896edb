-- The highest and the lowest value of one metric over an experiment's runs (their
-- progress, completion and checkpoint events): the best is one of them, as the
-- experiment's config says whether the metric is maximised or minimised.
SELECT
    maxOrNull(measurements[{metric:String}]) AS highest,
    minOrNull(measurements[{metric:String}]) AS lowest
FROM telemetry_events
WHERE experiment_id = {experiment_id:String}
  AND event_name IN ('crucible.run.progress', 'crucible.run.completed', 'crucible.run.checkpoint')
  AND mapContains(measurements, {metric:String})
