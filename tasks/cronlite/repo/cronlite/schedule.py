"""Fire times."""

from datetime import timedelta

from .expression import CronExpression

# Four years cover every day-of-month/month/weekday combination (leap days included).
_SEARCH_LIMIT = timedelta(days=4 * 366)


def _expression(expr):
    return expr if isinstance(expr, CronExpression) else CronExpression(expr)


def next_after(expr, when):
    """The first fire time strictly after ``when``."""
    expr = _expression(expr)
    candidate = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = when + _SEARCH_LIMIT
    while candidate <= limit:
        if candidate.month not in expr.months:
            # jump to the first day of the next month
            year = candidate.year + candidate.month // 12
            month = candidate.month % 12 + 1
            candidate = candidate.replace(year=year, month=month, day=1, hour=0, minute=0)
            continue
        if not expr.matches_day(candidate):
            candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
            continue
        if candidate.hour not in expr.hours:
            candidate = (candidate + timedelta(hours=1)).replace(minute=0)
            continue
        if candidate.minute not in expr.minutes:
            candidate += timedelta(minutes=1)
            continue
        return candidate
    raise ValueError("%r never fires" % expr.text)


def iterate(expr, start, count):
    """The next ``count`` fire times after ``start``."""
    expr = _expression(expr)
    times = []
    when = start
    for _ in range(count):
        when = next_after(expr, when)
        times.append(when)
    return times
