"""Business days: Monday to Friday, minus holidays."""

import datetime as _dt


def is_business_day(day, holidays=()):
    return day.weekday() < 5 and day not in holidays


def add_business_days(start, n, holidays=()):
    """The date ``n`` business days after ``start`` (before it for negative ``n``).

    ``start`` itself need not be a business day; ``n == 0`` returns ``start`` unchanged.
    """
    step = _dt.timedelta(days=1 if n >= 0 else -1)
    day = start
    while not is_business_day(day, holidays) and n:
        day += step
    for _ in range(abs(n)):
        day += step
        while day in holidays:
            day += step
    return day
