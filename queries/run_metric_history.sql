-- One metric of one run, in step order (then time), for charts. At most `max_points`
-- points: beyond that the points are cut into max_points / 2 buckets of equal count,
-- and each bucket keeps its lowest and its highest point, so spikes survive. Reads the
-- metric's own rows of telemetry_points (0014), each with its event's step and epoch.
WITH points AS (
    SELECT
        step,
        epoch,
        value,
        timestamp,
        row_number() OVER (ORDER BY step ASC NULLS LAST, timestamp, log_partition, log_offset, log_index) - 1 AS position,
        count() OVER () AS total_points
    FROM telemetry_points
    WHERE experiment_id = {experiment_id:String}
      AND metric = {name:String}
      AND run_id = {run_id:String}
      AND event_name IN ('crucible.run.progress', 'crucible.run.completed')
),
buckets AS (
    SELECT
        if(total_points <= {max_points:UInt32}, position, intDiv(position * intDiv({max_points:UInt32}, 2), total_points)) AS bucket,
        argMin((position, step, epoch, value, timestamp), value) AS low,
        argMax((position, step, epoch, value, timestamp), value) AS high,
        any(total_points) AS total
    FROM points
    GROUP BY bucket
)
SELECT DISTINCT
    point.1 AS position,
    point.2 AS step,
    point.3 AS epoch,
    point.4 AS value,
    point.5 AS timestamp,
    total
FROM buckets
ARRAY JOIN [low, high] AS point
ORDER BY position
