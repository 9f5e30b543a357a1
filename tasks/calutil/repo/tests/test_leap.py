import pytest

from calutil import days_in_month, days_in_year, is_leap


def test_ordinary_leap_years():
    assert is_leap(2024)
    assert not is_leap(2023)


def test_february():
    assert days_in_month(2024, 2) == 29
    assert days_in_month(2023, 2) == 28


def test_bad_month():
    with pytest.raises(ValueError):
        days_in_month(2024, 13)


@pytest.mark.parametrize("year", [1700, 1800, 1900, 2100])
def test_centuries_are_not_leap(year):
    assert not is_leap(year)
    assert days_in_month(year, 2) == 28


def test_every_400th_year_is_leap():
    assert is_leap(2000)
    assert days_in_year(2000) == 366
    assert days_in_year(1900) == 365
