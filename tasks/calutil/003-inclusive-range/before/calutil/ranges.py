"""Date ranges."""

import datetime as _dt


def date_range(start, end, step=1):
    """Dates from ``start`` to ``end`` INCLUSIVE, every ``step`` days.

    A negative ``step`` walks backwards (then ``end`` must not be after ``start``).
    """
    if step == 0:
        raise ValueError("step must not be zero")
    delta = _dt.timedelta(days=step)
    out = []
    day = start
    if step > 0:
        while day < end:
            out.append(day)
            day += delta
    else:
        while day > end:
            out.append(day)
            day += delta
    return out
