-- Usage of one model over a period, from its crucible.model.inference telemetry.
-- An event is the model's when its metadata model_id is the model's id or its
-- `model` (promoted from metadata) is the model's name. It failed when metadata
-- status is 'error' or an error_type is present. Latency is the measurement
-- latency_ms, else duration_ms; tokens are tokens, else total_tokens. Events
-- without a latency are left out of the latency figures (NULL, not 0). The period is
-- [since, until]: events dated ahead of now (ingest takes up to a day ahead) are not in it.
WITH
    metadata['error_type'] AS error_type,
    (metadata['status'] = 'error' OR error_type != '') AS failed,
    if(mapContains(measurements, 'latency_ms'), measurements['latency_ms'],
       if(mapContains(measurements, 'duration_ms'), measurements['duration_ms'], NULL)) AS latency,
    if(mapContains(measurements, 'tokens'), measurements['tokens'],
       if(mapContains(measurements, 'total_tokens'), measurements['total_tokens'], NULL)) AS tokens
SELECT
    count() AS total_requests,
    countIf(NOT failed) AS successes,
    avgOrNull(latency) AS avg_latency_ms,
    quantileExactInclusiveOrNull(0.99)(latency) AS p99_latency_ms,
    count(latency) AS latency_count,
    sumOrNull(tokens) AS total_tokens,
    sumMapIf([if(error_type = '', 'unknown', error_type)], [toUInt64(1)], failed) AS errors
FROM telemetry_events
WHERE event_name = 'crucible.model.inference'
  AND (metadata['model_id'] = {model_id:String} OR model = {model_name:String})
  AND timestamp >= {since:DateTime64(6)}
  AND timestamp <= {until:DateTime64(6)}
