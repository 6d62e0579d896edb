-- Every event of crucible.resources (experiments, models, API keys, sessions), for
-- audit queries in SQL. The log stays the source of truth; this is a copy made by
-- the audit writer, one row per event, deduplicated by log offset range.
CREATE TABLE IF NOT EXISTS resource_events
(
    log_offset UInt64,
    event LowCardinality(String),
    resource_id String,
    at DateTime64(6, 'UTC'),
    actor LowCardinality(String),
    body String
)
ENGINE = MergeTree
ORDER BY log_offset
SETTINGS non_replicated_deduplication_window = 10000
