-- Each run's latest value of each measurement in its progress and completion events, kept
-- as it arrives, so a run's page and the runs lists read a row per (run, measurement)
-- instead of every point the run reported (a run of 1 M steps: 70-90 ms of chDB for each
-- read before). "Latest" is the order run_latest_values.sql has always used: by the
-- worker's timestamp, then step (0 where the event has none), then log place. argMax is
-- idempotent, so a point counted twice (a backfill beside the view, a retried insert)
-- changes nothing. Filled by the view of 0018 and, for points stored before it, by 0019.
CREATE TABLE IF NOT EXISTS run_latest_values
(
    experiment_id LowCardinality(String),
    run_id String,
    metric LowCardinality(String),
    latest AggregateFunction(argMax, Float64, Tuple(DateTime64(6, 'UTC'), Float64, UInt32, UInt64, UInt32))
)
ENGINE = AggregatingMergeTree
ORDER BY (experiment_id, run_id, metric)
