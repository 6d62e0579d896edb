-- The checkpoints the given runs reported, in the order they were reported; a
-- checkpoint reported twice appears twice (the handler keeps the latest).
SELECT
    run_id,
    metadata['checkpoint_id'] AS id,
    metadata['path'] AS path,
    measurements,
    timestamp
FROM telemetry_events
WHERE experiment_id IN {experiment_ids:Array(String)}
  AND run_id IN {run_ids:Array(String)}
  AND event_name = 'crucible.run.checkpoint'
ORDER BY timestamp, log_partition, log_offset, log_index
