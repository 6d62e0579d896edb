"""Bounds on what a client's bytes may cost the server: JSON nesting and compressed bodies.

Pure functions with nothing of the web framework, so that ingest worker processes
use them too.

**Nesting.** msgspec decodes nested arrays and objects recursively and stops at
Python's recursion limit with a RecursionError: that is the bound on nesting, and
catching it costs nothing on the hot path. A byte scan counting bracket depth outside
strings before decoding (C-speed bytes operations, no per-byte loop) cost 1.3 to 1.6
times msgspec's whole decode of an ingest body (benchmarks/hostile_input.py), so ingest
would have paid more for the check than for the work. The limit is therefore the
decoder's: `sys.getrecursionlimit()` (1,000) less the frames in use, about 950 to 980
levels depending on the route. That bound moves with the stack in use, and an ingest
worker process decodes with an almost empty one: a value it accepted 980 levels deep
could not be decoded again by a read or the live tail deeper in the API's stack. So
what is kept (an event's `data`, a command's body) has a fixed bound of its own,
`MAX_STORED_DEPTH` levels, checked on the decoded value; only what is nested deeper
than a sane document pays for more than a glance at its top.

**Compression.** aiohttp inflates a compressed body as it arrives, on the event loop
and without a bound (1 MB of gzip is 1 GiB inflated). The server turns that off
(`auto_decompress=False`) and inflates here instead, a step at a time, stopping as
soon as the output passes the route's limit; large bodies are inflated in a thread,
since zlib lets go of the GIL (stepping on the event loop between other work still
held /healthz up to ~130 ms with ten bombs at once).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from service.core.problem import Problem

T = TypeVar("T")

NESTING_MESSAGE = "JSON nested too deeply (the limit is about 950 levels of arrays and objects)"

# Levels of arrays and objects a value that is stored may have; anything kept must be
# decodable again wherever it is read, at any stack depth the service reaches.
MAX_STORED_DEPTH = 64
STORED_NESTING_MESSAGE = f"nested deeper than {MAX_STORED_DEPTH} levels of arrays and objects"

# Inflated per step, so that the output is checked against the limit every 256 KiB.
INFLATE_STEP_BYTES = 256 * 1024

# Encodings a JSON body may use; anything else is 415.
INFLATABLE = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class TooDeep(Exception):
    """A JSON document nested deeper than the decoder goes."""


def decode_bounded(decode: Callable[[Any], T], data: Any) -> T:
    """`decode(data)`, with the decoder's recursion limit reported as TooDeep."""
    try:
        return decode(data)
    except RecursionError:
        raise TooDeep(NESTING_MESSAGE) from None


def nested_deeper_than(value: Any, limit: int = MAX_STORED_DEPTH) -> bool:
    """Whether `value` (decoded JSON) has more than `limit` levels of arrays and objects.

    Iterative, so that it holds at any depth; it stops at the first container too deep."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def too_large(limit: int) -> Problem:
    return Problem(413, "payload_too_large", f"request body is larger than {limit} bytes")


def unsupported_encoding(encoding: str) -> Problem:
    return Problem(
        415,
        "unsupported_media_type",
        f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none",
        {"Content-Encoding": [f"one of gzip, deflate, identity; not {encoding!r}"]},
    )


def content_encoding(header: str | None) -> str:
    """The one coding of a Content-Encoding header ('identity' when none); 415 for a chain or an unknown one."""
    codings = [c.strip().lower() for c in (header or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return "identity"
    if len(codings) > 1 or codings[0] not in INFLATABLE:
        raise unsupported_encoding(", ".join(codings))
    return codings[0]


def inflate_steps(body: bytes, encoding: str, limit: int) -> Iterator[bytes]:
    """The inflated body, a step of at most INFLATE_STEP_BYTES at a time; 413 once it passes
    `limit` bytes, 400 when it is not valid `encoding` data.

    A gzip body may be several members one after the other (RFC 1952); each is inflated.
    """
    inflated = 0
    data = body
    while data:
        inflater = _inflater(encoding, data)
        while data:
            try:
                piece = inflater.decompress(data, INFLATE_STEP_BYTES)
            except zlib.error as exc:
                raise Problem(400, "bad_request", f"the body is not valid {encoding} data: {exc}") from None
            data = inflater.unconsumed_tail
            inflated += len(piece)
            if inflated > limit:
                raise too_large(limit)
            if piece:
                yield piece
            if inflater.eof:
                break
        if not inflater.eof:
            raise Problem(400, "bad_request", f"the body is truncated {encoding} data")
        data = inflater.unused_data if encoding != "deflate" else b""


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The whole inflated body (see `inflate_steps`). zlib lets go of the GIL while it works, so
    a caller on the event loop runs this in a thread."""
    return b"".join(inflate_steps(body, encoding, limit))


def _inflater(encoding: str, data: bytes) -> Any:
    wbits = INFLATABLE[encoding]
    # Some clients send raw deflate for "deflate"; a zlib stream starts with 0x78 (32 KiB window).
    if encoding == "deflate" and data[:1] != b"\x78":
        wbits = -zlib.MAX_WBITS
    return zlib.decompressobj(wbits)
