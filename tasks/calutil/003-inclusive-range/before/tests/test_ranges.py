import datetime as dt

import pytest

from calutil import date_range


def test_empty_when_end_before_start():
    assert date_range(dt.date(2024, 1, 5), dt.date(2024, 1, 1)) == []


def test_zero_step_rejected():
    with pytest.raises(ValueError):
        date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 2), 0)


def test_step_skips_days():
    days = date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 6), 2)
    assert days == [dt.date(2024, 1, 1), dt.date(2024, 1, 3), dt.date(2024, 1, 5)]
