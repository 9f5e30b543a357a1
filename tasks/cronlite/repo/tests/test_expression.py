from datetime import datetime

import pytest

from cronlite import CronExpression, CronSyntaxError


def test_fields_are_parsed():
    e = CronExpression("5 4 * * *")
    assert e.minutes == [5] and e.hours == [4]
    assert e.days == list(range(1, 32))


def test_aliases():
    assert CronExpression("@hourly").minutes == [0]
    assert CronExpression("@weekly").weekdays == [0]


def test_wrong_number_of_fields():
    with pytest.raises(CronSyntaxError):
        CronExpression("* * * *")


def test_matches_ignores_seconds():
    e = CronExpression("30 12 * * *")
    assert e.matches(datetime(2024, 5, 1, 12, 30, 59))
    assert not e.matches(datetime(2024, 5, 1, 12, 31))


def test_weekday_only():
    e = CronExpression("0 9 * * MON")
    assert e.matches(datetime(2024, 5, 6, 9, 0))  # a Monday
    assert not e.matches(datetime(2024, 5, 7, 9, 0))


def test_day_of_month_or_weekday_when_both_given():
    e = CronExpression("0 0 1 * MON")
    assert e.matches(datetime(2024, 5, 1))   # the 1st, a Wednesday
    assert e.matches(datetime(2024, 5, 6))   # a Monday
    assert not e.matches(datetime(2024, 5, 7))
