"""The read side's files: the SQL of an events export (`query`), CSV, JSON lines and
Parquet made from the warehouse's stream (`formats`), export jobs written to disk
(`jobs`), and an experiment as one JSON document or zip (`experiment`).

Imports: `service.core`, `service.settings`, `service.log`, `service.warehouse`,
`service.resources`.
"""
