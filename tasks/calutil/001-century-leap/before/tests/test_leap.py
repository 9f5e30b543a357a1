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
