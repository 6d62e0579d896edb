"""Query-string parameters shared by list and aggregate endpoints: filters, pages, cursors, sort.

Every value a user chooses is checked here against an allow-list or a type, and
every refusal is a 422 naming the parameter and, where there is a list, the allowed values.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from service.core.errors import bad_parameter
from service.warehouse.client import sql_datetime

DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
QUERY_ATTRIBUTE = "crucible_query"

H = TypeVar("H", bound=Callable[..., Any])


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
            choices = f"filters are {allowed(allowed_fields)}" if allowed_fields else "this endpoint takes none"
            raise bad_parameter(key, f"is not a filter; {choices}")
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
        raise not_a_cursor() from None
    if cursor.sort != str(sort):
        raise bad_parameter("cursor", f"was made for sort={cursor.sort}, not sort={sort}")
    return cursor


def not_a_cursor() -> Exception:
    return bad_parameter("cursor", "is not a cursor this API gave out")


def cursor_time(text: str) -> str:
    """A time carried in a cursor (its key or snapshot), checked before it becomes a warehouse
    parameter: a forged one is a 422 here, not a query the warehouse refuses (a 503)."""
    if not text:
        raise not_a_cursor()
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise not_a_cursor() from None
    return sql_datetime(value)


def parse_page(query: Mapping[str, str], sort: Sort) -> Page:
    per_page = parse_int("per_page", query.get("per_page"), DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
    if "cursor" in query:
        return Page(per_page, None, decode_cursor(query["cursor"], sort))
    return Page(per_page, parse_int("page", query.get("page"), 1, 1), None)


def snapshot_now() -> str:
    return sql_datetime(dt.datetime.now(dt.UTC))


@dataclass(frozen=True, slots=True)
class Parameter:
    """One query parameter an endpoint takes, with the JSON Schema of its value."""

    name: str
    schema: Mapping[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """The query string of an endpoint: its parameters and its `filter[field]` fields.

    A handler checks its request against this declaration (`check`), and the OpenAPI
    document is built from the same one (`takes`), so what is declared is what is
    accepted. `filters` maps each field to its kind ("text" or "time"); `choices`
    names the values a field allows, when they are a closed list.
    """

    parameters: tuple[Parameter, ...] = ()
    filters: Mapping[str, str] = field(default_factory=dict)
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def check(self, query: Mapping[str, str]) -> dict[str, str]:
        """Refuse parameters and filters this endpoint does not take (422); the filters given."""
        check_known(query, self.names)
        return parse_filters(query, self.filters)

    def sort(self, query: Mapping[str, str]) -> Sort:
        """The order asked for, among the fields and with the default this query declares (`page_query`)."""
        declared = next(p for p in self.parameters if p.name == "sort")
        fields = [name for name in declared.schema["enum"] if not name.startswith("-")]
        return parse_sort(query.get("sort"), fields, declared.schema["default"])

    def __add__(self, other: Query) -> Query:
        """Both queries' parameters and filters (an endpoint with two modes declares their union)."""
        names = set(self.names)
        return Query(
            (*self.parameters, *(p for p in other.parameters if p.name not in names)),
            {**self.filters, **other.filters},
            {**self.choices, **other.choices},
        )


NO_QUERY = Query()


def takes(query: Query) -> Callable[[H], H]:
    """Declare the query string a handler takes, for the OpenAPI document."""

    def declare(handler: H) -> H:
        setattr(handler, QUERY_ATTRIBUTE, query)
        return handler

    return declare


def query_of(handler: Any) -> Query | None:
    """The query a handler declared with `takes`; None when it reads no query string."""
    query: Query | None = getattr(handler, QUERY_ATTRIBUTE, None)
    return query


def integer(low: int, high: int | None = None, default: int | None = None) -> dict[str, Any]:
    """The JSON Schema of an integer parameter `parse_int` reads with these bounds."""
    schema: dict[str, Any] = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    if default is not None:
        schema["default"] = default
    return schema


def one_of(values: Iterable[str], default: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "enum": list(values)}
    if default is not None:
        schema["default"] = default
    return schema


DATETIME = {"type": "string", "format": "date-time"}
# What encode_cursor gives out: unpadded URL-safe base64.
CURSOR = Parameter(
    "cursor",
    {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
    "meta.next_cursor of the previous page; the next page starts after it",
)


def sort_parameter(fields: Iterable[str], default: str) -> Parameter:
    """`sort`: a field, or `-field` for descending, as `parse_sort` reads it."""
    names = sorted(fields)
    return Parameter("sort", one_of([*names, *("-" + f for f in names)], default), "prefix with - for descending")


PAGE = Parameter("page", integer(1, default=1), "page number; ignored with a cursor")
PER_PAGE = Parameter("per_page", integer(1, MAX_PER_PAGE, DEFAULT_PER_PAGE))
# Pages without a choice of order: `page`/`per_page` or `cursor` (`parse_page`).
PAGES = Query((PAGE, PER_PAGE, CURSOR))


def page_query(
    sorts: Iterable[str],
    default_sort: str,
    filters: Mapping[str, str] | None = None,
    choices: Mapping[str, Sequence[str]] | None = None,
) -> Query:
    """The query of a list endpoint: filters, `sort`, and `page`/`per_page` or `cursor` (`parse_page`)."""
    return Query(
        (sort_parameter(sorts, default_sort), *PAGES.parameters),
        filters or {},
        choices or {},
    )
