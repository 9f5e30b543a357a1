"""Numeric intervals and sets of disjoint intervals."""

from .interval import EMPTY, Interval
from .intervalset import IntervalSet
from .notation import IntervalSyntaxError, format_interval, parse

__all__ = ["EMPTY", "Interval", "IntervalSet", "IntervalSyntaxError", "format_interval", "parse"]
__version__ = "0.5.2"
