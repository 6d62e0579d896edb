"""Request bodies of resource commands: JSON objects checked field by field.

API.md's validation errors list every problem at once, by field
(`{"name": ["can't be blank"], "tags": ["..."]}`), so each field is converted on
its own with msgspec instead of stopping at the first error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import hdrs, web

from service.core.errors import ApiError, validation_error
from service.core.input_bounds import (
    STORED_NESTING_MESSAGE,
    TooDeep,
    content_encoding,
    decode_bounded,
    inflate,
    nested_deeper_than,
    too_large,
)
from service.core.problem import split_validation_error
from service.core.thread_priority import lower_this_thread

MAX_COMMAND_BODY_BYTES = 1024 * 1024
# Compressed bodies smaller than this are inflated on the event loop, sparing them a thread
# hop: deflate's ratio is at most ~1:1000, so that is at most ~1 MiB of output (~1 ms).
INLINE_INFLATE_BYTES = 1024
INFLATE_NICE = 10  # below the event loop, as the warehouse's threads are (--warehouse-nice)
# One thread inflates the larger ones, in turn, below the event loop's priority: ten bombs
# inflating at once in the default pool took both cores from the loop (/healthz p99 ~150 ms).
_inflater = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="inflate", initializer=lower_this_thread, initargs=(INFLATE_NICE,)
)
# Compressed bodies queued for or in that thread, at most; more are 503 with Retry-After. One
# key sending bombs at once would otherwise queue everyone's compressed requests behind its own.
MAX_INFLATING = 8
_inflating = 0  # touched on the event loop only, with no await between its check and its change
BLANK = "can't be blank"

_object_decoder = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class Field:
    """One accepted field: its msgspec type (constraints in `Annotated`) and whether it must be present."""

    type: Any
    required: bool = False
    nonblank: bool = False  # when present, it may not be null or blank (a PATCHed name)


def fields_of(struct: type[msgspec.Struct], optional: bool = False, nonblank: tuple[str, ...] = ()) -> dict[str, Field]:
    """The fields of an input struct (the documented contract) as checks, by their JSON names; `optional` for PATCH."""
    return {
        info.encode_name: Field(info.type, required=info.required and not optional, nonblank=info.name in nonblank)
        for info in msgspec.structs.fields(struct)
    }


async def read_body(request: web.Request, limit: int = MAX_COMMAND_BODY_BYTES, json: bool = True) -> bytes:
    """The body, inflated when it is gzip or deflate; 413 once it (or its inflated form) passes
    `limit`. `json`: a body there is must be declared JSON (`require_json`).

    The server does not inflate bodies as they arrive (see service/core/input_bounds.py): here a
    bomb costs at most `limit` bytes of output, inflated off the event loop unless small.
    """
    encoding = content_encoding(request.headers.get(hdrs.CONTENT_ENCODING))  # 415 before reading anything
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    body = await request.read()
    if encoding == "identity":
        if len(body) > limit:  # a chunked body has no Content-Length to check first
            raise too_large(limit)
    elif len(body) < INLINE_INFLATE_BYTES:
        body = inflate(body, encoding, limit)
    else:
        body = await _inflate_in_thread(body, encoding, limit)
    if json:
        require_json(request, body)
    return body


async def _inflate_in_thread(body: bytes, encoding: str, limit: int) -> bytes:
    global _inflating
    if _inflating >= MAX_INFLATING:
        raise ApiError(
            503,
            "unavailable",
            f"{MAX_INFLATING} compressed bodies are being inflated already; retry, or send this one uncompressed",
            headers={"Retry-After": "1"},
        )
    _inflating += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_inflater, inflate, body, encoding, limit)
    finally:
        _inflating -= 1


def is_json_media_type(content_type: str) -> bool:
    """`application/json`, with parameters (`; charset=utf-8`) or not, or a `+json` type."""
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def require_json(request: web.Request, body: bytes) -> None:
    """415 unless a body is declared JSON.

    A page of another site can POST `text/plain` or a form without asking (no CORS
    preflight), but not `application/json`. An empty body needs no Content-Type: actions
    such as `POST /experiments/:id/start` take none, and clients send them bare."""
    declared = request.headers.get(hdrs.CONTENT_TYPE)
    if not body or (declared is not None and is_json_media_type(declared)):
        return
    raise ApiError(
        415,
        "unsupported_media_type",
        "the body must be JSON sent with 'Content-Type: application/json'"
        + (f", not {declared!r}" if declared is not None else "; this request named no Content-Type"),
        {hdrs.CONTENT_TYPE: ["must be application/json"]},
    )


def parse_object(body: bytes, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object; 400 when it is not JSON, 422 when it is not an object."""
    if not body.strip() and allow_empty:
        return {}
    try:
        value = decode_bounded(msgspec.json.decode, body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_request", f"malformed JSON: {exc}") from None
    except TooDeep as exc:
        raise ApiError(400, "bad_request", str(exc), {"body": ["nested too deeply"]}) from None
    if nested_deeper_than(value):  # what a command keeps must read back anywhere (service/core/input_bounds.py)
        raise ApiError(400, "bad_request", f"JSON {STORED_NESTING_MESSAGE}", {"body": ["nested too deeply"]})
    if not isinstance(value, dict):
        raise validation_error("the body must be a JSON object", {"body": ["must be a JSON object"]})
    return value


def unwrap(body: dict[str, Any], wrapper: str, optional: bool = False) -> dict[str, Any]:
    """API.md wraps resources in an object named after them: `{"experiment": {...}}`."""
    if wrapper not in body:
        if optional:
            return {}
        raise validation_error(f"the body must hold an object {wrapper!r}", {wrapper: ["is required"]})
    inner = body[wrapper]
    if not isinstance(inner, dict):
        raise validation_error(f"{wrapper} must be a JSON object", {wrapper: ["must be a JSON object"]})
    unknown = set(body) - {wrapper}
    if unknown:
        raise validation_error(
            f"unknown fields beside {wrapper!r}: {', '.join(sorted(unknown))}",
            {name: ["is not a known field"] for name in sorted(unknown)},
        )
    return inner


def check_fields(raw: Mapping[str, Any], fields: Mapping[str, Field], what: str, prefix: str = "") -> dict[str, Any]:
    """Each present field converted to its type; 422 listing every problem by field.

    `prefix` names a nested object's fields in the details (`options.` gives `options.alpha`)."""
    values: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    for name, spec in fields.items():
        if name not in raw:
            if spec.required:
                problems[prefix + name] = [BLANK]
            continue
        value = raw[name]
        if (spec.required or spec.nonblank) and (value is None or (isinstance(value, str) and not value.strip())):
            problems[prefix + name] = [BLANK]
            continue
        try:
            values[name] = msgspec.convert(raw[name], spec.type)
        except msgspec.ValidationError as exc:
            message, path = split_validation_error(exc)
            problems[prefix + name] = [message + (f" at {prefix}{name}{path[1:]}" if path != "$" else "")]
    for name in raw:
        if name not in fields:
            problems[prefix + name] = [f"is not a field of {what}; fields are {', '.join(fields)}"]
    if problems:
        first = next(iter(problems))
        raise validation_error(f"{first.capitalize()} {problems[first][0]}", problems)
    return values
