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


class PageMeta(msgspec.Struct, kw_only=True):
    """List metadata: page numbers and the cursor form, both always present on lists.

    `page` is null when the page was asked for by cursor; `next_cursor` is null on the last page.
    """

    total: int
    page: int | None
    per_page: int
    next_cursor: str | None
    has_more: bool
