"""The front end → log step: a request body decoded, checked and grouped into log
records (`batch`, pure, also run in the worker processes of `workers`), then appended
durably, once per Idempotency-Key (`ingestor`).

Imports: `service.core`, `service.settings`, `service.log`, `service.warehouse`,
`service.resources`.
"""
