-- Which log records of an offset range the warehouse holds, with how many events each:
-- after an insert whose outcome is unknown (the warehouse went away during it), the writer
-- inserts only the records not stored whole. ClickHouse's deduplication alone is not enough
-- there: a server killed mid-insert can keep the events' part without the token that marks
-- it (seen with the endpoint over chDB: a retried record stored twice).
SELECT log_offset AS offset, count() AS events
FROM telemetry_events
WHERE log_partition = {partition:UInt32} AND log_offset BETWEEN {first:UInt64} AND {last:UInt64}
GROUP BY log_offset
