"""What every setting may be, as types the command line's parser (jsonargparse) checks before anything starts.

Single values are checked by their type (``PositiveInt``, ``Fraction``, a ``Literal`` of names); what
depends on two settings or on the machine is checked where the settings are used, with ``SettingError``.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

__all__ = [
    "ClosedUnitInterval",
    "Fraction",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OpenUnitInterval",
    "PositiveFloat",
    "PositiveInt",
    "SettingError",
]

Fraction = restricted_number_type("Fraction", float, [(">=", 0), ("<", 1)], docstring="a float in [0, 1)")


_WORDS: dict[Any, str] = {
    PositiveInt: "a positive integer",
    NonNegativeInt: "an integer >= 0",
    PositiveFloat: "a number > 0",
    NonNegativeFloat: "a number >= 0",
    ClosedUnitInterval: "a number in [0, 1]",
    OpenUnitInterval: "a number in (0, 1)",
    Fraction: "a number in [0, 1)",
    bool: "true or false",
    int: "an integer",
    float: "a number",
}


def allowed_values(annotation: Any) -> str | None:
    """What a setting's type allows, in words: ``one of easy, hard``, ``a positive integer or null``."""
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(str(value) for value in get_args(annotation))
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        if all(get_origin(member) is Literal for member in members):
            names = [str(value) for member in members for value in get_args(member)]
            words = "one of " + ", ".join(dict.fromkeys(names))
        else:
            words = " or ".join(filter(None, map(allowed_values, members))) or None
        if words and len(members) < len(get_args(annotation)):
            words += " or null"
        return words
    return _WORDS.get(annotation)


def plain(settings: dict[str, Any]) -> dict[str, Any]:
    """The values as Python's own ``int`` and ``float``: the parser hands a value it checked as an instance
    of its type (``PositiveInt(4)``), which some libraries reject (ale-py's ``frameskip``)."""

    def one(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        return int(value) if isinstance(value, int) else float(value)

    return {key: one(value) for key, value in settings.items()}


class SettingError(ValueError):
    """A setting the run cannot use, in one line that starts with its name (``data.batch_size: ...``)."""
