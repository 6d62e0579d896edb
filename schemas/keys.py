"""API keys and sessions as the API shows them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from msgspec import Meta

from schemas.resources import RateLimits


class RateLimitsInput(RateLimits, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Rate limits as a client sends them: a misspelt class is an error, not a default.
    (The log's `RateLimits` accepts unknown fields, so newer classes can be added.)"""


class ApiKeyInput(msgspec.Struct, kw_only=True):
    name: Annotated[str, Meta(min_length=1, max_length=255)]
    scopes: Annotated[list[str], Meta(min_length=1)]  # of read, write, ingest, admin
    rate_limits: RateLimitsInput = RateLimitsInput()


class ApiKeyBody(msgspec.Struct, kw_only=True):
    api_key: ApiKeyInput


class SessionInput(msgspec.Struct, kw_only=True):
    api_key: Annotated[str, Meta(min_length=1, max_length=1000)]  # the key's secret


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
