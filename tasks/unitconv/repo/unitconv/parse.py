"""Parsing ``'<number> <unit>'``."""

import re

from .quantity import Quantity

_QUANTITY = re.compile(
    r"^\s*(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>\S.*?)\s*$")


def parse_quantity(text):
    """``'5 km'``, ``'-40°F'``, ``'1.5e3 m'``, ``'3 kilometers'`` -> :class:`Quantity`."""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError("%r is not a quantity (a number followed by a unit)" % text)
    number = match.group("number")
    value = float(number) if any(c in number for c in ".eE") else int(number)
    return Quantity(value, match.group("unit"))
