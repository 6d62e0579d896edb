-- One metric of one run, in step order (then time), for charts. At most `max_points`
-- points: beyond that the points are cut into max_points / 2 buckets of equal count,
-- and each bucket keeps its lowest and its highest point, so spikes survive. Reads the
-- metric's own rows of telemetry_points (0014), each with its event's step and epoch.
--
-- A point's position is its row number in step order. The order is total (a point's log
-- place is unique), so both readings of `points` number the same point alike. The numbers
-- come from rowNumberInAllBlocks() over the sorted stream, which is one stream after the
-- sort's final merge (tests/api/test_runs_api.py checks the kept points against a sort
-- in Python, over points sent out of order in many inserts); row_number() OVER () gave the same numbers 4x slower (150 against 35 ms for 1 M
-- points). Each bucket picks two positions with scalar argMin/argMax, and the points at
-- those positions are read again: carrying the point's columns through argMin as a tuple
-- took twice as long as reading them again (260 against 115 ms in all).
WITH
    (
        SELECT count()
        FROM telemetry_points
        WHERE experiment_id = {experiment_id:String}
          AND metric = {name:String}
          AND run_id = {run_id:String}
          AND event_name IN ('crucible.run.progress', 'crucible.run.completed')
    ) AS total_points,
    points AS (
        SELECT rowNumberInAllBlocks() AS position, step, epoch, value, timestamp
        FROM (
            SELECT step, epoch, value, timestamp
            FROM telemetry_points
            WHERE experiment_id = {experiment_id:String}
              AND metric = {name:String}
              AND run_id = {run_id:String}
              AND event_name IN ('crucible.run.progress', 'crucible.run.completed')
            ORDER BY step ASC NULLS LAST, timestamp, log_partition, log_offset, log_index
        )
    ),
    kept AS (
        SELECT arrayJoin([argMin(position, value), argMax(position, value)]) AS kept_position
        FROM points
        GROUP BY if(
            total_points <= {max_points:UInt32},
            position,
            intDiv(position * intDiv({max_points:UInt32}, 2), greatest(total_points, 1))  -- no points: no division
        )
    )
SELECT position, step, epoch, value, timestamp, total_points AS total
FROM points
WHERE position IN (SELECT kept_position FROM kept)
ORDER BY position
