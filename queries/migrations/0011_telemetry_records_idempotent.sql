-- Whether a record's batch came with an Idempotency-Key, and when the record was
-- appended to the log (its log timestamp). Only such batches can be sent again with
-- the same batch id, so only their records are remembered in telemetry_batches (0012,
-- 0013). The writer sets both from the record's headers and timestamp; the log's time,
-- not the events' received_at, is what the writer's retry window compares.
ALTER TABLE telemetry_records
    ADD COLUMN IF NOT EXISTS idempotent Bool DEFAULT false,
    ADD COLUMN IF NOT EXISTS log_timestamp_ms UInt64 DEFAULT 0
