"""ClickHouse SQL, one statement per `.sql` file, with `{name:Type}` server-side parameters only.

`load("events_list_desc")` returns the text of `events_list_desc.sql`;
`migrations()` lists `migrations/NNNN_name.sql` in order.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def load(name: str) -> str:
    """The SQL text of `queries/<name>.sql`."""
    return files(__name__).joinpath(f"{name}.sql").read_text(encoding="utf-8")


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migration, in the order they must be applied."""
    found = []
    for entry in files(__name__).joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append((int(number), name, entry.read_text(encoding="utf-8")))
    return sorted(found)
