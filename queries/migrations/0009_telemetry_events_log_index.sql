-- Each event's place in its log record (0 for the first event of a batch's record).
-- Events of one batch often share a timestamp (those sent without one get the receive
-- time); (timestamp, log_partition, log_offset, log_index) orders them as they were
-- sent, where an order is promised: latest values, logs, checkpoints, metric history.
-- Rows stored before this migration read 0, the order they had before.
ALTER TABLE telemetry_events ADD COLUMN IF NOT EXISTS log_index UInt32 DEFAULT 0 AFTER log_offset
