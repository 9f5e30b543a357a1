"""Leap years and month lengths in the proleptic Gregorian calendar."""

_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def is_leap(year):
    """Every 4th year, except centuries, except every 400th year."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_in_month(year, month):
    if not 1 <= month <= 12:
        raise ValueError("month must be in 1..12, got %r" % (month,))
    if month == 2 and is_leap(year):
        return 29
    return _DAYS[month - 1]


def days_in_year(year):
    return 366 if is_leap(year) else 365
