-- The last log record of a partition the warehouse holds below an offset, with its batch
-- id: a writer compares it with the log's record at that offset, to know that the log is
-- the one the warehouse was filled from (offsets alone are not enough: a topic made anew
-- reaches the same small offsets again). Looks back a bounded stretch, read through the
-- minmax of log_offset; none found means nothing to compare.
SELECT log_offset AS offset, any(batch_id) AS batch_id
FROM telemetry_events
WHERE log_partition = {partition:UInt32} AND log_offset < {before:UInt64} AND log_offset + 10000 >= {before:UInt64}
GROUP BY log_offset
ORDER BY log_offset DESC
LIMIT 1
