-- The points of events stored before 0015's view existed. Migrations run before any
-- writer starts (`crucible migrate` in the distributed topology, before the writer in
-- `crucible serve`), so no insert runs beside this one; a record whose points are
-- already here (this migration run before, cut off before it was marked applied) is
-- left out, so running it twice stores nothing twice.
INSERT INTO telemetry_points
SELECT
    experiment_id,
    measurement.1 AS metric,
    timestamp,
    measurement.2 AS value,
    event_name,
    run_id,
    model,
    if(mapContains(measurements, 'step'), measurements['step'], NULL) AS step,
    if(mapContains(measurements, 'epoch'), measurements['epoch'], NULL) AS epoch,
    log_partition,
    log_offset,
    log_index
FROM telemetry_events
ARRAY JOIN measurements AS measurement
WHERE (log_partition, log_offset) NOT IN (SELECT DISTINCT log_partition, log_offset FROM telemetry_points)
