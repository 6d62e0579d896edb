-- The offset after the last log record of a partition already in the warehouse.
SELECT max(log_offset) + 1 AS next_offset, count() AS rows
FROM telemetry_events
WHERE log_partition = {partition:UInt32} AND log_offset >= {committed:UInt64}
