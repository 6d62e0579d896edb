"""Stored files (run checkpoints): the `store` interface, a `local` directory (the default)
and `s3`-compatible object storage.

Imports: `service.core`, `service.settings`, `service.log`, `service.warehouse`,
`service.resources`.
"""
