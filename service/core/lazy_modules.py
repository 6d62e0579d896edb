"""Modules imported on first use: scipy.stats costs ~70 MB of RSS at import, which a process
that only ingests (most of them) never needs. The statistics code reads it through
`lazy(...)`, and type checkers see the real module."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for module `name`; the first attribute read imports it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


def lazy(name: str) -> Any:
    return LazyModule(name)
