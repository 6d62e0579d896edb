-- The latest records of a partition whose batches came with an Idempotency-Key, newest
-- first: what a writer taking the partition remembers, to drop a retry of one of them.
SELECT batch_id, experiment_id, toUnixTimestamp64Milli(appended_at) AS appended_ms
FROM telemetry_batches
WHERE log_partition = {partition:UInt32}
ORDER BY log_offset DESC
LIMIT {limit:UInt64}
