"""Requests aiohttp refuses before any handler runs, answered in API.md's error shape.

A request line over `max_line_size` (a URL over 8 KB), a header with a control byte,
a malformed chunk: aiohttp's parser turns these into a plain-text 400 from its request
handler's `handle_error`, logged with a traceback as if the server had failed. They are
the client's fault, so here they get the JSON error shape and one log line. aiohttp has
no setting for this: the server's per-connection handler class is replaced, by giving
the application a `Server` whose connections use `ShapedErrorHandler`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from service.core.problem import Problem
from service.http.error_middleware import error_response

logger = logging.getLogger(__name__)


class ShapedErrorHandler(RequestHandler):
    """aiohttp's connection handler, but its own refusals are JSON and logged in one line."""

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)  # the server's fault: log it in full
        # LineTooLong is a request line (the URL) or a header line; aiohttp says which in its message.
        text = (exc.message or HTTPStatus(status).phrase).strip()
        if isinstance(exc, LineTooLong):
            text = f"request line or header too long: {text}"
        logger.info("refused a malformed request from %s: %s", request.remote, text)
        response = error_response(Problem(status, "bad_request", text))
        response.force_close()
        return response


class ShapedErrorServer(web.Server):
    """A `web.Server` whose connections are `ShapedErrorHandler`s."""

    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return ShapedErrorHandler(self, loop=self._loop, **kwargs)


def install(app: web.Application) -> None:
    """Make the servers `app` runs on (web.run_app, AppRunner, the test client) use ShapedErrorServer.

    aiohttp builds the server in `Application._make_handler`; the one built there is given
    this class, which changes only which handler each connection gets.
    """
    make: Callable[..., web.Server] = app._make_handler

    def make_handler(**kwargs: Any) -> web.Server:
        server = make(**kwargs)
        server.__class__ = ShapedErrorServer
        return server

    app._make_handler = make_handler  # type: ignore[method-assign]
