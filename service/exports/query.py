"""The SQL of an events export: which fields, in which form for each file format.

A query file finds the events (`telemetry_export.sql`: the filters of GET
/telemetry/events; `experiment_telemetry.sql`: one experiment's, in a fixed order);
this module selects the requested fields from it. It is a
small query builder that writes only allow-listed column expressions and
placeholders: a field's map key is a `{key_N:String}` parameter and its column
name an `{name_N:Identifier}` parameter, never text in the SQL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import queries
from service.core.errors import validation_error

# The columns of an event, in the order a default export writes them.
STANDARD_FIELDS = (
    "id",
    "event_name",
    "timestamp",
    "received_at",
    "experiment_id",
    "run_id",
    "model",
    "measurements",
    "metadata",
    "data",
)
KEYED_FIELDS = ("measurements", "metadata")  # `measurements.<key>`, `metadata.<key>`: one map entry
MAX_FIELDS = 512
MAX_KEY_LENGTH = 128
# ClickHouse names a column from an Identifier parameter with these characters escaped
# twice (the name would differ from the key), so such keys cannot be columns of their own.
_UNNAMEABLE = re.compile(r"[`'\\\x00-\x1f\x7f]")

# Reading in the table's order (an experiment's events) merges one stream per part, each
# holding a block: small blocks and no read-ahead buffering keep memory flat (measured on
# 10M rows: +140 MiB over the process's idle size instead of +550 MiB, at the same speed).
STREAM_SETTINGS = "max_block_size = 8192, read_in_order_use_buffering = 0"

# A map entry's value, NULL where the event lacks the key (never 0 or '').
_ENTRY = "if(mapContains(e.{column}, {{key_{index}:String}}), e.{column}[{{key_{index}:String}}], NULL)"


@dataclass(frozen=True, slots=True)
class ExportField:
    """One requested field: a standard column, or the entry `key` of the map `column`."""

    column: str
    key: str | None = None

    @property
    def name(self) -> str:
        return self.column if self.key is None else f"{self.column}.{self.key}"


@dataclass(frozen=True, slots=True)
class QueryShape:
    """How a file format wants the columns: expressions replacing a bare column, and settings."""

    expressions: dict[str, str]
    settings: str


DEFAULT_FIELDS = tuple(ExportField(name) for name in STANDARD_FIELDS)


def parse_fields(names: Sequence[str] | None) -> tuple[ExportField, ...]:
    """The requested fields (all standard columns when none are named); 422 listing every bad one."""
    if names is None:
        return DEFAULT_FIELDS
    problems: list[str] = []
    fields: list[ExportField] = []
    seen: set[str] = set()
    if not names:
        problems.append("must name at least one field")
    if len(names) > MAX_FIELDS:
        problems.append(f"may name at most {MAX_FIELDS} fields")
    for index, name in enumerate(names):
        field, problem = _parse_field(name)
        if problem is not None:
            problems.append(f"{name!r} (at {index}) {problem}")
        elif name in seen:
            problems.append(f"{name!r} (at {index}) is named twice")
        else:
            seen.add(name)
            fields.append(field)
    if problems:
        raise validation_error(f"fields {problems[0]}", {"fields": problems})
    return tuple(fields)


def _parse_field(name: str) -> tuple[ExportField, str | None]:
    if name in STANDARD_FIELDS:
        return ExportField(name), None
    column, dot, key = name.partition(".")
    if not dot or column not in KEYED_FIELDS:
        allowed = ", ".join(STANDARD_FIELDS)
        return ExportField(name), f"is not a field; fields are {allowed}, measurements.<key> and metadata.<key>"
    if not key or len(key) > MAX_KEY_LENGTH:
        return ExportField(name), f"needs a key of 1 to {MAX_KEY_LENGTH} characters after {column}."
    if _UNNAMEABLE.search(key):
        return ExportField(name), (
            "has a key with a quote, backtick, backslash or control character, which cannot name a column;"
            f" export {column} whole instead"
        )
    return ExportField(column, key), None


def export_sql(fields: Sequence[ExportField], shape: QueryShape, source: str) -> tuple[str, dict[str, str]]:
    """The SELECT of `fields` over the events of queries/<source>.sql, and the parameters the fields add."""
    columns: list[str] = []
    parameters: dict[str, str] = {}
    for index, field in enumerate(fields):
        if field.key is None:
            expression = shape.expressions.get(field.column, f"e.{field.column}")
            columns.append(f"{expression} AS {field.column}")
        else:
            parameters[f"key_{index}"] = field.key
            parameters[f"name_{index}"] = field.name
            columns.append(f"{_ENTRY.format(column=field.column, index=index)} AS {{name_{index}:Identifier}}")
    select = ",\n    ".join(columns)
    settings = ", ".join(part for part in (STREAM_SETTINGS, shape.settings) if part)
    sql = f"SELECT\n    {select}\nFROM (\n{queries.load(source)}\n) AS e\nSETTINGS {settings}"
    return sql, parameters
