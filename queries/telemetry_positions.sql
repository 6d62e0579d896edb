-- The log positions of one experiment's events the warehouse holds: per partition of
-- crucible.telemetry, the offset after the last record inserted. A record carries one
-- experiment's events, so these are exactly the records an export of it reflects.
SELECT log_partition AS partition, max(log_offset) + 1 AS next_offset
FROM telemetry_events
WHERE experiment_id = {experiment_id:String}
GROUP BY log_partition
ORDER BY log_partition
