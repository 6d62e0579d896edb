"""What frameworks hand a logger, made into what a run's events can carry."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any


def as_number(value: Any) -> float | None:
    """A metric's value as a float, or None when it is not a number.

    Frameworks hand over Python and NumPy numbers, and sometimes one-element tensors
    (anything with `.item()`); strings and other objects in a log are left out."""
    if type(value) is float or type(value) is int:  # the common case, without the ABC's check
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            scalar = item()
        except (TypeError, ValueError, RuntimeError):  # a tensor of several values
            return None
        if isinstance(scalar, numbers.Real):
            return float(scalar)
    return None


def numbers_only(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of `values` that are numbers, as floats (NaN and infinities are the
    client's to drop: it leaves them out of every event)."""
    found = {}
    for name, value in values.items():
        number = as_number(value)
        if number is not None:
            found[str(name)] = number
    return found


def json_safe(value: Any) -> Any:
    """Hyperparameters as JSON can carry them: objects and lists kept as they are nested,
    numbers, strings, booleans and null as they are, anything else (a class, a function,
    a path, an enum) as its text. The client encodes events later, on its own thread,
    where a value it cannot encode would cost the whole event."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    number = as_number(value)
    return number if number is not None else str(value)
