-- count, sum, min, max and avg of one measurement per time bucket and group, read from
-- whole events: for what telemetry_points cannot answer, a count of all events
-- (metric = '') or groups by a metadata key; else telemetry_aggregate.sql. Events
-- without the measurement are left out (a missing value is NULL, not 0); `n` is how
-- many values each point used. interval_seconds = 0: one bucket.
-- The group (grouped = false: none, grp = '') is a column (group_column: one of
-- event_name, experiment_id, run_id, model, checked against an allow-list) or, with
-- by_metadata, metadata[group_key]. The conditions are parameters: without a group, grp
-- folds to a constant and no group is read. A column group still reads the metadata
-- map for the branch not taken: measured 5-9 % on such queries, the price of one text
-- per query shape instead of three (earlier, a multiIf choosing among all three cost
-- 1.4-1.7x on every query).
WITH
    if({grouped:Bool},
       if({by_metadata:Bool}, metadata[{group_key:String}], toString({group_column:Identifier})),
       '') AS grp
SELECT
    if({interval_seconds:UInt32} = 0, NULL,
       toStartOfInterval(timestamp, toIntervalSecond(greatest({interval_seconds:UInt32}, 1)))) AS bucket,
    grp,
    count() AS n,
    -- Where a point without an interval starts: the `after` filter, else its first event.
    coalesce({after:Nullable(DateTime64(6))}, min(timestamp)) AS first,
    sum(measurements[{metric:String}]) AS sum,
    min(measurements[{metric:String}]) AS min,
    max(measurements[{metric:String}]) AS max,
    avg(measurements[{metric:String}]) AS avg
FROM telemetry_events
WHERE ({metric:String} = '' OR mapContains(measurements, {metric:String}))
  AND ({event_name:Nullable(String)} IS NULL OR event_name = {event_name:Nullable(String)})
  AND ({experiment_id:Nullable(String)} IS NULL OR experiment_id = {experiment_id:Nullable(String)})
  AND ({run_id:Nullable(String)} IS NULL OR run_id = {run_id:Nullable(String)})
  AND ({model:Nullable(String)} IS NULL OR model = {model:Nullable(String)})
  AND ({after:Nullable(DateTime64(6))} IS NULL OR timestamp >= {after:Nullable(DateTime64(6))})
  AND ({before:Nullable(DateTime64(6))} IS NULL OR timestamp < {before:Nullable(DateTime64(6))})
GROUP BY grp, bucket
ORDER BY grp, bucket
LIMIT {limit:UInt32}
