"""One interval of the real line."""

import math


class Interval:
    """The numbers between ``lower`` and ``upper``; each end is open or closed.

    An interval with no member (``[3, 1]``, ``[2, 2)``) is empty and equal to :data:`EMPTY`.
    """

    __slots__ = ("lower", "upper", "lower_closed", "upper_closed")

    def __init__(self, lower, upper, lower_closed=True, upper_closed=False):
        if lower == -math.inf:
            lower_closed = False
        if upper == math.inf:
            upper_closed = False
        self.lower = lower
        self.upper = upper
        self.lower_closed = lower_closed
        self.upper_closed = upper_closed

    @classmethod
    def closed(cls, lower, upper):
        return cls(lower, upper, True, True)

    @classmethod
    def open(cls, lower, upper):
        return cls(lower, upper, False, False)

    def is_empty(self):
        if self.lower > self.upper:
            return True
        if self.lower == self.upper:
            return not (self.lower_closed and self.upper_closed)
        return False

    def __contains__(self, x):
        if self.is_empty():
            return False
        above = x > self.lower or (self.lower_closed and x == self.lower)
        below = x < self.upper or (self.upper_closed and x == self.upper)
        return above and below

    def length(self):
        return 0 if self.is_empty() else self.upper - self.lower

    def overlaps(self, other):
        """Whether the two intervals have a member in common."""
        return not (self & other).is_empty()

    def __and__(self, other):
        if self.is_empty() or other.is_empty():
            return EMPTY
        if self.lower > other.lower or (self.lower == other.lower and not self.lower_closed):
            lower, lower_closed = self.lower, self.lower_closed
        else:
            lower, lower_closed = other.lower, other.lower_closed
        if self.upper < other.upper or (self.upper == other.upper and not self.upper_closed):
            upper, upper_closed = self.upper, self.upper_closed
        else:
            upper, upper_closed = other.upper, other.upper_closed
        result = Interval(lower, upper, lower_closed, upper_closed)
        return EMPTY if result.is_empty() else result

    def _key(self):
        if self.is_empty():
            return ()
        return (self.lower, self.upper, self.lower_closed, self.upper_closed)

    def __eq__(self, other):
        if not isinstance(other, Interval):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        from .notation import format_interval
        return "Interval(%r)" % format_interval(self)


EMPTY = Interval(0, 0, False, False)
