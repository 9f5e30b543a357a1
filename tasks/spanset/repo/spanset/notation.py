"""Interval notation: ``[1, 5)``, ``(-inf, 0]``, ``{}`` for the empty interval."""

import math

from .interval import EMPTY, Interval


class IntervalSyntaxError(ValueError):
    """A string is not in interval notation."""


_BOUNDS = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf}


def _number(text, original):
    text = text.strip().lower()
    if text in _BOUNDS:
        return _BOUNDS[text]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise IntervalSyntaxError("%r: %r is not a number" % (original, text)) from None
    if math.isnan(value):
        raise IntervalSyntaxError("%r: NaN is not a bound" % original)
    return value


def parse(text):
    """Parse interval notation; ``[`` and ``]`` are closed ends, ``(`` and ``)`` open ones."""
    stripped = text.strip()
    if stripped == "{}":
        return EMPTY
    if len(stripped) < 5 or stripped[0] not in "[(" or stripped[-1] not in "])":
        raise IntervalSyntaxError("%r is not in interval notation" % text)
    inner = stripped[1:-1]
    if inner.count(",") != 1:
        raise IntervalSyntaxError("%r: expected two bounds separated by a comma" % text)
    lower, upper = inner.split(",")
    return Interval(_number(lower, text), _number(upper, text),
                    stripped[0] == "[", stripped[-1] == "]")


def _bound(x):
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    return repr(x)


def format_interval(interval):
    if interval.is_empty():
        return "{}"
    return "%s%s, %s%s" % ("[" if interval.lower_closed else "(", _bound(interval.lower),
                           _bound(interval.upper), "]" if interval.upper_closed else ")")
