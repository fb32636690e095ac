"""Just enough ``resource.Quantity`` parsing to validate and compare resource amounts.

Exact rational arithmetic (``Fraction``) so ``"1"`` and ``"1000m"`` compare equal and
``"0.1"`` does not drift, as upstream's exact ``inf.Dec`` comparison does not either.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

#: The pattern upstream's quantity parser reports when a string does not parse.
QUANTITY_PATTERN = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
QUANTITY_MSG = f"quantities must match the regular expression '{QUANTITY_PATTERN}'"

_RE = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([a-zA-Z]*)([-+]?[0-9]*)")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def _scale(suffix: str, exponent: str) -> Fraction | None:
    if suffix in ("e", "E") and exponent not in ("", "+", "-"):
        return Fraction(10) ** int(exponent)
    if exponent:
        return None
    if suffix in _BINARY:
        return Fraction(1024) ** _BINARY[suffix]
    if suffix in _DECIMAL:
        return Fraction(10) ** _DECIMAL[suffix]
    return None


def parse_quantity(value: Any) -> Fraction | None:
    """The exact amount ``value`` denotes, or ``None`` when it is not a quantity."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Fraction(value)
    if not isinstance(value, str):
        return None
    match = _RE.fullmatch(value)
    if match is None:
        return None
    number, suffix, exponent = match.groups()
    scale = _scale(suffix, exponent)
    if scale is None:
        return None
    return Fraction(number) * scale
