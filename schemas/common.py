"""Envelopes and the error shape shared by every endpoint (API.md "Response Format")."""

from __future__ import annotations

from typing import Any

import msgspec


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class ErrorResponse(msgspec.Struct, kw_only=True):
    error: ErrorBody


class PageMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """List metadata: page numbers and the cursor form, both always present on lists."""

    per_page: int
    has_more: bool
    next_cursor: str | None = None
    page: int | None = None
    total: int | None = None
