"""Pages of in-memory resources: filter, sort, page or cursor, total.

Sorting is by (key, id) so the order is total and a cursor (the last row's key
and id) stays valid while rows are added: the next page starts strictly after it.
A sorted order is cached until the projection moves, so repeated reads of a large,
quiet list only filter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from schemas.common import PageMeta
from service.params import Cursor, Page, Sort, encode_cursor

T = TypeVar("T")

SortKey = Callable[[Any], str]


def time_key(value: dt.datetime | None) -> str:
    """A datetime as text that sorts like the datetime (fixed width, UTC)."""
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


@dataclass(frozen=True, slots=True)
class ResultPage(Generic[T]):
    items: list[T]
    meta: PageMeta


class SortedViews(Generic[T]):
    """Sorted orders of one collection, rebuilt only when its version changes."""

    def __init__(self, keys: dict[str, SortKey]) -> None:
        self._keys = keys
        self._cache: dict[str, tuple[object, int, list[tuple[str, str, T]]]] = {}

    def ordered(self, owner: object, version: int, items: Iterable[T], field: str) -> list[tuple[str, str, T]]:
        """(key, id, item) ascending by key then id, for `items` of `owner` at `version`."""
        cached = self._cache.get(field)
        if cached is not None and cached[0] is owner and cached[1] == version:
            return cached[2]
        key = self._keys[field]
        rows = sorted(((key(item), item.id, item) for item in items), key=lambda row: (row[0], row[1]))  # type: ignore[attr-defined]
        self._cache[field] = (owner, version, rows)
        return rows


def paginate(rows: Sequence[tuple[str, str, T]], keep: Callable[[T], bool], sort: Sort, page: Page) -> ResultPage[T]:
    """The requested page of the rows `keep` accepts, in `sort` order, with the total."""
    ordered: Iterable[tuple[str, str, T]] = reversed(rows) if sort.descending else rows
    cursor = page.cursor
    after = (cursor.value, cursor.id) if cursor is not None else None
    start = page.offset
    items: list[T] = []
    last: tuple[str, str] | None = None
    total = 0
    has_more = False
    for key, item_id, item in ordered:
        if not keep(item):
            continue
        total += 1
        if after is not None:
            position = (key, item_id)
            if (position <= after) if not sort.descending else (position >= after):
                continue
        if start > 0:
            start -= 1
            continue
        if len(items) < page.per_page:
            items.append(item)
            last = (key, item_id)
        else:
            has_more = True
    next_cursor = None
    if has_more and last is not None:
        next_cursor = encode_cursor(Cursor(str(sort), last[0], last[1], ""))
    meta = PageMeta(total=total, page=page.page, per_page=page.per_page, next_cursor=next_cursor, has_more=has_more)
    return ResultPage(items, meta)
