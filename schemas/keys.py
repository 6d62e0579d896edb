"""API keys and sessions as the API shows them."""

from __future__ import annotations

import datetime as dt

import msgspec

from schemas.resources import RateLimits


class RateLimitsInput(RateLimits, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Rate limits as a client sends them: a misspelt class is an error, not a default.
    (The log's `RateLimits` accepts unknown fields, so newer classes can be added.)"""


class ApiKeyOut(msgspec.Struct, kw_only=True):
    """A key; `secret` is present only in the answer that created it."""

    id: str
    name: str
    scopes: list[str]
    rate_limits: RateLimits
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    secret: str | None = None


class SessionOut(msgspec.Struct, kw_only=True):
    key_id: str
    scopes: list[str]
    expires_at: dt.datetime
