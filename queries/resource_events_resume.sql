-- The offset after the last resource event already copied into the warehouse.
SELECT max(log_offset) + 1 AS next_offset, count() AS rows
FROM resource_events
