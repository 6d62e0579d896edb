-- Exact p50, p95 and p99 of one measurement per time bucket and group, in one
-- quantilesExactInclusive call: the same values as numpy.percentile's default
-- (linear) method. Reads the metric's own rows of telemetry_points (0014), so the
-- other measurements cost nothing. The group (grouped = false: none, grp = '') is a
-- column, one of event_name, experiment_id, run_id, model (an allow-list); groups by a
-- metadata key read whole events: telemetry_quantiles_events.sql.
WITH if({grouped:Bool}, toString({group_column:Identifier}), '') AS grp
SELECT
    if({interval_seconds:UInt32} = 0, NULL,
       toStartOfInterval(timestamp, toIntervalSecond(greatest({interval_seconds:UInt32}, 1)))) AS bucket,
    grp,
    count() AS n,
    -- Where a point without an interval starts: the `after` filter, else its first event.
    coalesce({after:Nullable(DateTime64(6))}, min(timestamp)) AS first,
    quantilesExactInclusive(0.5, 0.95, 0.99)(value) AS quantiles
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
