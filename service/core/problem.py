"""A refusal in the API's error shape, with nothing of the web framework: ingest workers raise it too."""

from __future__ import annotations

from typing import Any

import msgspec


class Problem(Exception):
    """Answer `status` with `code`, `message` and `details` (API.md's error envelope)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec says "message - at `$.path`"; return (message, path), the path "$" when it names none."""
    message, _, path = str(exc).partition(" - at `")
    return message, path.rstrip("`") or "$"
