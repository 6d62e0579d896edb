"""A refusal in the API's error shape, with nothing of the web framework: ingest workers raise it too."""

from __future__ import annotations

from typing import Any


class Problem(Exception):
    """Answer `status` with `code`, `message` and `details` (API.md's error envelope)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
