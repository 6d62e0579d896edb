"""RFC 6455 section 5.1: a server closes the connection (1002) when a client frame is not masked.

aiohttp's frame reader serves clients and servers alike and takes unmasked frames from
either. `MaskedFramesOnly` sits in front of it on a server's socket: it reads only the
frame headers (two to fourteen bytes per frame, skipping payloads by their length), hands
every byte to aiohttp's reader unchanged, and at the first unmasked frame stops feeding
it and reports the violation, so that the socket is closed with 1002.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import WebSocketError, WSCloseCode, web

UNMASKED_REASON = "client frames must be masked (RFC 6455 section 5.1)"

_MASK_BIT = 0x80
_LENGTH_BITS = 0x7F
_MASK_KEY_BYTES = 4


class MaskedFramesOnly:
    """A payload parser wrapping aiohttp's WebSocket reader (same `feed_data`/`feed_eof`)."""

    def __init__(self, inner: Any, refuse: Callable[[], None]) -> None:
        self._inner = inner
        self._refuse = refuse
        self._header = bytearray()  # the bytes of the current frame's header read so far
        self._header_length = 2  # known once its second byte is read
        self._payload_left = 0
        self._failed = False

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._failed:
            return False, b""
        data = bytes(data)
        pos, size = 0, len(data)
        while pos < size:
            if self._payload_left:
                step = min(self._payload_left, size - pos)
                self._payload_left -= step
                pos += step
                continue
            take = min(self._header_length - len(self._header), size - pos)
            self._header += data[pos : pos + take]
            pos += take
            if len(self._header) < self._header_length:
                break  # the rest of the header comes with the next read
            if self._header_length == 2:
                second = self._header[1]
                if not second & _MASK_BIT:
                    frame_start = pos - len(self._header)
                    if frame_start > 0:  # the frames before it are fine
                        self._inner.feed_data(data[:frame_start])
                    self._failed = True
                    self._refuse()
                    return False, b""
                extended = {126: 2, 127: 8}.get(second & _LENGTH_BITS, 0)
                self._header_length = 2 + extended + _MASK_KEY_BYTES
                continue
            length = self._header[1] & _LENGTH_BITS
            if length >= 126:
                length = int.from_bytes(self._header[2 : self._header_length - _MASK_KEY_BYTES], "big")
            self._payload_left = length
            self._header.clear()
            self._header_length = 2
        result: tuple[bool, bytes] = self._inner.feed_data(data)
        return result


def require_masked_frames(request: web.Request, ws: web.WebSocketResponse) -> None:
    """After `ws.prepare(request)`: close `ws` with 1002 at the first unmasked client frame.

    aiohttp offers no option for this; its reader is the protocol's payload parser, which
    this wraps. The violation is handed to the socket as its reader's error, which aiohttp
    answers with a close frame of that code (and `receive()` returns an ERROR message).
    """
    protocol: Any = request.protocol
    queue: Any = ws._reader  # the queue `receive()` reads, which aiohttp's reader feeds

    def refuse() -> None:
        queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, UNMASKED_REASON))

    protocol._payload_parser = MaskedFramesOnly(protocol._payload_parser, refuse)
