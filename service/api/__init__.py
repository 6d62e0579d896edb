"""The endpoints of API.md, one module per resource: each declares its routes, with
their scopes and query parameters, and calls the domain packages below through the
plumbing of `service.http`. `openapi` derives the OpenAPI document from these routes.

Imports: `service.http` and everything below it; only `service.app` imports it.
"""
