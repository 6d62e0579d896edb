"""The middleware that answers every failure in API.md's one error shape."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from schemas.common import ErrorBody, ErrorResponse
from service.core.errors import ApiError
from service.core.problem import Problem
from service.http.appkeys import SETTINGS

logger = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode

# aiohttp's own refusals, named in API.md's vocabulary.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


def error_response(error: Problem) -> web.Response:
    body = ErrorResponse(error=ErrorBody(code=error.code, message=error.message, details=error.details))
    headers = error.headers if isinstance(error, ApiError) else None
    return web.Response(status=error.status, body=_encode(body), content_type="application/json", headers=headers)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as error:  # ApiError, or a refusal of code shared with worker processes
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 413:
            message = f"request body is larger than {request.app[SETTINGS].max_body_bytes} bytes"
        return error_response(ApiError(exc.status, code, message))
    except ConnectionError:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            logger.exception("unexpected error in %s %s", request.method, request.path)
            return error_response(ApiError(500, "internal_error", "internal server error"))
        # The client hung up mid-request (mid-body, typically): not the server's fault, and
        # nobody is left to read an answer.
        logger.info("client went away during %s %s", request.method, request.path)
        return error_response(ApiError(400, "bad_request", "the client closed the connection"))
    except Exception:
        logger.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "internal server error"))
