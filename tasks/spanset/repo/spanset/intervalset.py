"""Sets of disjoint intervals."""

from .interval import Interval


def _touch(a, b):
    """Whether ``a`` (starting first) and ``b`` overlap or meet with no gap between them."""
    if a.upper > b.lower:
        return True
    return a.upper == b.lower and (a.upper_closed or b.lower_closed)


def _start_key(interval):
    return (interval.lower, not interval.lower_closed)


class IntervalSet:
    """A union of intervals, kept as sorted, disjoint, non-touching intervals."""

    def __init__(self, intervals=()):
        self._intervals = []
        for interval in intervals:
            self.add(interval)

    def add(self, interval):
        if interval.is_empty():
            return
        merged = []
        current = interval
        for existing in self._intervals:
            first, second = sorted([existing, current], key=_start_key)
            if _touch(first, second):
                current = _hull(first, second)
            else:
                merged.append(existing)
        merged.append(current)
        self._intervals = sorted(merged, key=_start_key)

    def __iter__(self):
        return iter(self._intervals)

    def __len__(self):
        return len(self._intervals)

    def __contains__(self, x):
        return any(x in interval for interval in self._intervals)

    def measure(self):
        """The total length."""
        return sum(interval.length() for interval in self._intervals)

    def __or__(self, other):
        return IntervalSet(list(self) + list(other))

    def __and__(self, other):
        result = IntervalSet()
        for a in self:
            for b in other:
                result.add(a & b)
        return result

    def __eq__(self, other):
        return isinstance(other, IntervalSet) and self._intervals == other._intervals

    def __repr__(self):
        return "IntervalSet(%r)" % (self._intervals,)


def _hull(a, b):
    """The smallest interval holding ``a`` and ``b`` (which start in that order)."""
    if b.upper > a.upper or (b.upper == a.upper and b.upper_closed):
        upper, upper_closed = b.upper, b.upper_closed
    else:
        upper, upper_closed = a.upper, a.upper_closed
    if a.lower == b.lower:
        lower_closed = a.lower_closed or b.lower_closed
    else:
        lower_closed = a.lower_closed
    return Interval(a.lower, upper, lower_closed, upper_closed)
