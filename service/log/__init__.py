"""The event log, the source of truth: `interface` (EventLog, StoredRecord, the topics),
`sqlite` (the embedded default, one file under the data dir) and `kafka` (aiokafka).

Imports: `service.core`, `service.settings`.
"""
