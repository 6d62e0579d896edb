-- The samples of a statistical test: the values of one measurement in one experiment's
-- telemetry, one row per group. The group is a column (group_key = '': group_column, one
-- of model, run_id, event_name, checked against an allow-list) or metadata[group_key].
-- Every group is listed with its count, so an unknown group can be answered with the
-- groups that exist. Values (when collect_values: counts of a category need none) and
-- labels (metadata[label_key]: the pair key or the category) are collected for the
-- wanted groups only (empty `groups`: all). metric = '' takes every event. Events
-- outside any group (an empty group value) and, when label_required, events without the
-- label are left out. `positions` is the highest log offset per log partition among the
-- rows used: the telemetry the test saw.
-- `times` are the samples' timestamps (Unix microseconds, encoded as the values are), one per
-- value or label and aligned with them: the service sorts samples by them (see
-- service/api/statistics.py), because groupArray follows the order in which parts and
-- threads are read, which changes with inserts and merges. Sorting here instead, by
-- timestamp and event id, took 0.5-2 s more per million values than numpy does.
-- Values travel as base64 of their little-endian float64 bytes (rightPad restores the zero
-- bytes reinterpretAsString drops): exact, 60 % of the JSON text, and decoded by msgspec
-- and numpy without a Python float per value (2 x 1M values: 0.2 s less per test).
WITH
    if({group_key:String} = '', toString({group_column:Identifier}), metadata[{group_key:String}]) AS grp,
    (empty({groups:Array(String)}) OR has({groups:Array(String)}, grp)) AS wanted
SELECT
    grp,
    count() AS n,
    base64Encode(arrayStringConcat(arrayMap(
        value -> rightPad(reinterpretAsString(value), 8, char(0)),
        groupArrayIf(measurements[{metric:String}], wanted AND {collect_values:Bool})))) AS values,
    groupArrayIf(metadata[{label_key:String}], wanted AND {label_key:String} != '') AS labels,
    base64Encode(arrayStringConcat(arrayMap(
        time -> rightPad(reinterpretAsString(time), 8, char(0)),
        groupArrayIf(toUnixTimestamp64Micro(timestamp), wanted AND ({collect_values:Bool} OR {label_key:String} != ''))))) AS times,
    maxMapIf([log_partition], [log_offset], wanted) AS positions
FROM telemetry_events
WHERE experiment_id = {experiment_id:String}
  AND ({metric:String} = '' OR mapContains(measurements, {metric:String}))
  AND (NOT {label_required:Bool} OR mapContains(metadata, {label_key:String}))
  AND grp != ''
GROUP BY grp
ORDER BY grp
