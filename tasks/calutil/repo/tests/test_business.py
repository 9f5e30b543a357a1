import datetime as dt

from calutil import add_business_days, is_business_day

MON = dt.date(2024, 6, 10)


def test_is_business_day():
    assert is_business_day(MON)
    assert not is_business_day(dt.date(2024, 6, 15))


def test_within_week():
    assert add_business_days(MON, 3) == dt.date(2024, 6, 13)


def test_zero():
    assert add_business_days(dt.date(2024, 6, 15), 0) == dt.date(2024, 6, 15)


def test_holiday_skipped():
    assert add_business_days(MON, 1, holidays={dt.date(2024, 6, 11)}) == dt.date(2024, 6, 12)


def test_friday_plus_one_is_monday():
    assert add_business_days(dt.date(2024, 6, 14), 1) == dt.date(2024, 6, 17)


def test_spanning_two_weekends():
    assert add_business_days(MON, 10) == dt.date(2024, 6, 24)


def test_backwards_over_weekend():
    assert add_business_days(MON, -1) == dt.date(2024, 6, 7)
