"""The refusals a handler or anything below it raises: an answer other than success, in API.md's
error shape (the middleware in service/http/error_middleware.py gives it), with nothing of the web framework."""

from __future__ import annotations

from typing import Any

from service.core.problem import Problem


class ApiError(Problem):
    """An answer other than success; raised anywhere below a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, code, message, details)
        self.headers = headers or {}


def validation_error(message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(422, "validation_error", message, details)


def bad_parameter(name: str, problem: str) -> ApiError:
    """422 for one query parameter, in API.md's `details` shape: field → list of problems."""
    return validation_error(f"{name} {problem}", {name: [problem]})
