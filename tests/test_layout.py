"""The layout of service/: every import points down the package order, so no import circle
joins two packages; and every module imports.

Type-only imports (under TYPE_CHECKING) and imports inside functions count: a circle of
type names is still a circle for the reader. Run alone with `pytest tests/test_layout.py`.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[1] / "service"
# From the bottom up. A unit may import itself and the units of earlier rows; the units of
# one row are siblings and may not import each other.
LAYERS = (
    ("core",),
    ("settings",),
    ("log",),
    ("warehouse",),
    ("resources",),
    ("ingest", "artifacts", "live", "exports", "statistics"),
    ("http",),
    ("api", "ui"),
    ("app",),
    ("cli",),
    ("__main__",),
)
RANK = {unit: rank for rank, row in enumerate(LAYERS) for unit in row}


def _modules() -> list[Path]:
    return sorted(path for path in SERVICE.rglob("*.py") if path.name != "__init__.py" or path.parent != SERVICE)


def _unit(module: str) -> str:
    """`service.live.hub` → `live`; `service.settings` → `settings`."""
    return module.split(".")[1]


def _name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every `service.*` module or package that the file names in an import, wherever the import is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            if node.module == "service":
                found.update(f"service.{alias.name}" for alias in node.names)
            elif node.module and node.module.startswith("service."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("service."))
    return found


def test_every_unit_has_a_place_in_the_order() -> None:
    units = {_unit(_name(path)) for path in _modules()}
    assert units == set(RANK), "a new package or top-level module needs a row in LAYERS (and the README's table)"


def test_imports_point_down_the_order() -> None:
    upward = []
    for path in _modules():
        importer = _name(path)
        for imported in sorted(_imports(path)):
            if _unit(imported) == _unit(importer):
                continue
            if RANK[_unit(imported)] >= RANK[_unit(importer)]:
                upward.append(f"{importer} imports {imported}")
    assert upward == []


@pytest.mark.parametrize("path", [p for p in _modules() if p.name != "__main__.py"], ids=_name)
def test_module_imports(path: Path) -> None:
    importlib.import_module(_name(path))


@pytest.mark.parametrize("package", ["schemas", "crucible_client"])
def test_contract_and_client_stand_apart(package: str) -> None:
    """The msgspec contract and the worker client are used without the server: they import none of it."""
    root = SERVICE.parent / package
    assert [str(path) for path in root.rglob("*.py") if any(m.startswith("service") for m in _imports(path))] == []
