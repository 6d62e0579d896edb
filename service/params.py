"""Query-string parameters shared by list and aggregate endpoints: filters, pages, cursors, sort.

Every value a user chooses is checked here against an allow-list or a type, and
every refusal is a 422 naming the parameter and, where there is a list, the allowed values.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from service.errors import bad_parameter
from service.warehouse import sql_datetime

DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100


def allowed(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


def parse_datetime(name: str, text: str) -> dt.datetime:
    """An ISO 8601 time; one without a zone is UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise bad_parameter(name, f"must be an ISO 8601 datetime, got {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def parse_int(name: str, text: str | None, default: int, low: int, high: int | None = None) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_parameter(name, f"must be an integer, got {text!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise bad_parameter(name, f"must be {bound}, got {value}")
    return value


def parse_filters(query: Mapping[str, str], allowed_fields: Mapping[str, str]) -> dict[str, str]:
    """`filter[field]=value` pairs; `allowed_fields` maps each field to its kind ("text" or "time")."""
    found: dict[str, str] = {}
    for key, value in query.items():
        if not key.startswith("filter["):
            continue
        field = key[len("filter[") : -1] if key.endswith("]") else ""
        if field not in allowed_fields:
            raise bad_parameter(key, f"is not a filter; filters are {allowed(allowed_fields)}")
        found[field] = value
    return found


def check_known(query: Mapping[str, str], known: Iterable[str]) -> None:
    """Refuse parameters this endpoint does not know, so a typo is not silently ignored."""
    names = set(known)
    for key in query:
        if key not in names and not key.startswith("filter["):
            raise bad_parameter(key, f"is not a parameter of this endpoint; it takes {allowed(names)}")


@dataclass(frozen=True, slots=True)
class Sort:
    field: str
    descending: bool

    def __str__(self) -> str:
        return ("-" if self.descending else "") + self.field


def parse_sort(text: str | None, fields: Iterable[str], default: str) -> Sort:
    text = text or default
    name = text.removeprefix("-")
    fields = set(fields)
    if name not in fields:
        choices = allowed(fields | {"-" + f for f in fields})
        raise bad_parameter("sort", f"cannot sort by {text!r}; use one of {choices}")
    return Sort(name, text.startswith("-"))


@dataclass(frozen=True, slots=True)
class Page:
    per_page: int
    page: int | None  # None when a cursor is used
    cursor: Cursor | None

    @property
    def offset(self) -> int:
        return 0 if self.page is None else (self.page - 1) * self.per_page


class Cursor(msgspec.Struct, array_like=True):
    """Where the next page starts: the last row's sort key, the sort, and the snapshot time."""

    sort: str
    value: str
    id: str
    snapshot: str


_cursor_decoder = msgspec.json.Decoder(Cursor)
_cursor_encoder = msgspec.json.Encoder()


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(_cursor_encoder.encode(cursor)).decode().rstrip("=")


def decode_cursor(text: str, sort: Sort) -> Cursor:
    try:
        cursor = _cursor_decoder.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError, RecursionError):  # nested: msgspec's bound
        raise bad_parameter("cursor", "is not a cursor this API gave out") from None
    if cursor.sort != str(sort):
        raise bad_parameter("cursor", f"was made for sort={cursor.sort}, not sort={sort}")
    return cursor


def parse_page(query: Mapping[str, str], sort: Sort) -> Page:
    per_page = parse_int("per_page", query.get("per_page"), DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
    if "cursor" in query:
        return Page(per_page, None, decode_cursor(query["cursor"], sort))
    return Page(per_page, parse_int("page", query.get("page"), 1, 1), None)


def snapshot_now() -> str:
    return sql_datetime(dt.datetime.now(dt.UTC))
