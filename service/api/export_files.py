"""Answering with an export: a file made while it is sent, or one a job already wrote to disk."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from aiohttp import hdrs, web

from service.core.thread_stream import ThreadStream
from service.http.downloads import attachment
from service.http.responses import warehouse_unavailable
from service.warehouse.client import WarehouseError

logger = logging.getLogger(__name__)


async def send_stream(
    request: web.Request, make: Callable[[], Iterator[bytes]], filename: str, content_type: str
) -> web.StreamResponse:
    """Stream the bytes `make()` yields, made on a thread of their own, as a download.

    A warehouse that fails before the first piece is a 503 like any query. Once
    bytes are sent the status cannot change: a failure then cuts the connection
    before the chunked body's end, so the client sees an incomplete download
    rather than a short file that looks whole.
    """
    stream: ThreadStream[bytes] = ThreadStream(make)
    try:
        try:
            first = await anext(stream, b"")
        except WarehouseError as exc:
            raise warehouse_unavailable(exc) from None
        response = web.StreamResponse(
            headers={hdrs.CONTENT_TYPE: content_type, hdrs.CONTENT_DISPOSITION: attachment(filename)}
        )
        await response.prepare(request)
        try:
            await response.write(first)
            async for chunk in stream:
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        except Exception:
            logger.exception("export %s failed after its answer began; cutting the connection", filename)
            if request.transport is not None:
                request.transport.close()
        return response
    finally:
        await stream.aclose()


def send_file(path: Path, filename: str, content_type: str) -> web.FileResponse:
    """A finished file from disk (sendfile where the platform has it)."""
    return web.FileResponse(
        path, headers={hdrs.CONTENT_TYPE: content_type, hdrs.CONTENT_DISPOSITION: attachment(filename)}
    )
