"""Files served to the browser from memory: read and gzipped once, revalidated by ETag."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import mimetypes
from pathlib import Path

from aiohttp import web

# What a browser takes each kind of file as; JavaScript modules must come as JavaScript.
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
# Smaller than this, gzip saves less than its headers and the CPU are worth.
_COMPRESS_FROM_BYTES = 1024


class StaticFile:
    def __init__(self, path: Path, cache_control: str) -> None:
        self.path = path
        self.cache_control = cache_control
        self.content_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._loaded: tuple[bytes, bytes | None, str] | None = None

    def _read(self) -> tuple[bytes, bytes | None, str]:
        body = self.path.read_bytes()
        # Level 6, gzip's default: the charting library's 1.4 MB take about 0.06 s, once per process.
        gzipped = gzip.compress(body, 6, mtime=0) if len(body) >= _COMPRESS_FROM_BYTES else None
        return body, gzipped, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    def load(self) -> None:
        if self._loaded is None:
            self._loaded = self._read()

    async def response(self, request: web.Request, headers: dict[str, str]) -> web.Response:
        if self._loaded is None:  # two first requests at once both read it: the same bytes
            self._loaded = await asyncio.to_thread(self._read)
        body, gzipped, etag = self._loaded
        headers = {**headers, "ETag": etag, "Cache-Control": self.cache_control, "Vary": "Accept-Encoding"}
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        if gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzipped
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers, content_type=self.content_type)


class StaticFolder:
    """Every file under a folder, by its path relative to it; nothing outside it can be named.

    All are read at once, when the folder is first served: a process serves one version of
    the UI's files even if a new one is installed while it runs."""

    def __init__(self, root: Path, cache_control: str) -> None:
        self._files = {
            path.relative_to(root).as_posix(): StaticFile(path, cache_control)
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
        for file in self._files.values():
            file.load()

    def get(self, name: str) -> StaticFile | None:
        return self._files.get(name)
