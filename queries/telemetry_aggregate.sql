-- count, sum, min, max and avg of one measurement per time bucket and group, from the
-- metric's own rows of telemetry_points (0014): only events that have the measurement
-- count (a missing value is NULL, not 0); `n` is how many values each point used.
-- interval_seconds = 0: one bucket. The group (grouped = false: none, grp = '') is a
-- column, one of event_name, experiment_id, run_id, model (an allow-list). A count of
-- all events, or groups by a metadata key, read whole events:
-- telemetry_aggregate_events.sql.
WITH if({grouped:Bool}, toString({group_column:Identifier}), '') AS grp
SELECT
    if({interval_seconds:UInt32} = 0, NULL,
       toStartOfInterval(timestamp, toIntervalSecond(greatest({interval_seconds:UInt32}, 1)))) AS bucket,
    grp,
    count() AS n,
    -- Where a point without an interval starts: the `after` filter, else its first event.
    coalesce({after:Nullable(DateTime64(6))}, min(timestamp)) AS first,
    sum(value) AS sum,
    min(value) AS min,
    max(value) AS max,
    avg(value) AS avg
FROM telemetry_points
WHERE metric = {metric:String}
  AND ({event_name:Nullable(String)} IS NULL OR event_name = {event_name:Nullable(String)})
  AND ({experiment_id:Nullable(String)} IS NULL OR experiment_id = {experiment_id:Nullable(String)})
  AND ({run_id:Nullable(String)} IS NULL OR run_id = {run_id:Nullable(String)})
  AND ({model:Nullable(String)} IS NULL OR model = {model:Nullable(String)})
  AND ({after:Nullable(DateTime64(6))} IS NULL OR timestamp >= {after:Nullable(DateTime64(6))})
  AND ({before:Nullable(DateTime64(6))} IS NULL OR timestamp < {before:Nullable(DateTime64(6))})
GROUP BY grp, bucket
ORDER BY grp, bucket
LIMIT {limit:UInt32}
