"""Sending a stored file over HTTP: one byte range, entity tags, attachment names (RFC 9110, RFC 6266).

Range support is deliberately the single-range subset: `bytes=a-b`, `bytes=a-` and
`bytes=-n` answer 206 with Content-Range; a range starting past the end answers
416 with `Content-Range: bytes */<size>`. Several ranges, another unit or a
malformed header are ignored and the whole file is sent (200), which RFC 9110
§14.2 allows: a multipart/byteranges answer is rarely wanted and easy to abuse.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from service.artifacts.store import StoredFile
from service.core.errors import ApiError

logger = logging.getLogger(__name__)

_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,16}")
DEFAULT_EXTENSION = ".ckpt"


@dataclass(frozen=True, slots=True)
class Span:
    """The bytes an answer carries: all of them (200) or one range (206)."""

    start: int
    length: int
    partial: bool

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.start + self.length - 1}/{size}"


def entity_tag(sha256: str) -> str:
    """The strong ETag of a file: its SHA-256, quoted."""
    return f'"{sha256}"'


def none_match(header: str | None, etag: str) -> bool:
    """If-None-Match: the client's copy is current (`*`, or one of its tags compared weakly)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def requested_span(headers: Mapping[str, str], size: int, etag: str) -> Span:
    """The bytes to send for the request's Range (and If-Range, compared strongly) over a file of `size`."""
    whole = Span(0, size, partial=False)
    header = headers.get("Range")
    if header is None:
        return whole
    if_range = headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:  # changed since (or a date, which we cannot check)
        return whole
    match = _SINGLE_RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return whole
    first, last = match.groups()
    if not first:  # the last n bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise unsatisfiable(size)
        start = max(size - suffix, 0)
        return Span(start, size - start, partial=True)
    start = int(first)
    if last and int(last) < start:  # malformed: ignored like any other
        return whole
    if start >= size:
        raise unsatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return Span(start, end - start + 1, partial=True)


def unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"the range starts past the end of the file ({size} bytes)",
        {"Range": [f"must start below {size}"]},
        headers={"Content-Range": f"bytes */{size}"},
    )


def attachment(filename: str) -> str:
    """Content-Disposition naming the download (RFC 6266 quoted-string: `\\` and `"` escaped)."""
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    return f'attachment; filename="{quoted}"'


def safe_extension(path: str | None) -> str:
    """The extension of a reported path (`/ckpts/epoch_40.pt` gives `.pt`) when it is plain letters
    and digits, else `.ckpt`. Only the extension is taken: the path never names a file we open."""
    if not path:
        return DEFAULT_EXTENSION
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    candidate = dot + extension
    if stem and _EXTENSION.fullmatch(candidate):
        return candidate.lower()
    return DEFAULT_EXTENSION


async def send_file(
    request: web.Request, stored: StoredFile, span: Span, headers: Mapping[str, str]
) -> web.StreamResponse:
    """Stream `span` of the open file (headers only for HEAD)."""
    response = web.StreamResponse(status=206 if span.partial else 200, headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = span.length
    if span.partial:
        response.headers["Content-Range"] = span.content_range(stored.size)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    try:
        async for chunk in stored.chunks(span.start, span.length):
            await response.write(chunk)
        await response.write_eof()
    except Exception as error:
        # The status line is sent: no error answer can follow. Closing the connection
        # short of Content-Length tells the client the download failed.
        if not isinstance(error, ConnectionError):
            logger.exception("download of %s failed after %d bytes", request.path, response.body_length)
        if request.transport is not None:
            request.transport.close()
    return response
