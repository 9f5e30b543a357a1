from datetime import datetime

import pytest

from cronlite import iterate, next_after


def test_next_minute():
    assert next_after("* * * * *", datetime(2024, 1, 1, 10, 0, 30)) == datetime(2024, 1, 1, 10, 1)


def test_next_day_rollover():
    assert next_after("15 3 * * *", datetime(2024, 1, 1, 4, 0)) == datetime(2024, 1, 2, 3, 15)


def test_month_rollover_to_next_year():
    assert next_after("0 0 1 1 *", datetime(2024, 6, 1)) == datetime(2025, 1, 1)


def test_leap_day():
    assert next_after("0 12 29 2 *", datetime(2024, 3, 1)) == datetime(2028, 2, 29, 12, 0)


def test_iterate_every_minute():
    times = iterate("* * * * *", datetime(2024, 1, 1, 10, 5), 3)
    assert times == [datetime(2024, 1, 1, 10, 6), datetime(2024, 1, 1, 10, 7),
                     datetime(2024, 1, 1, 10, 8)]


def test_never_fires():
    with pytest.raises(ValueError):
        next_after("0 0 31 2 *", datetime(2024, 1, 1))


def test_iterate_steps():
    times = iterate("*/20 * * * *", datetime(2024, 1, 1, 10, 5), 4)
    assert times == [datetime(2024, 1, 1, 10, 20), datetime(2024, 1, 1, 10, 40),
                     datetime(2024, 1, 1, 11, 0), datetime(2024, 1, 1, 11, 20)]


def test_next_after_a_matching_time_is_the_following_one():
    assert next_after("0 * * * *", datetime(2024, 1, 1, 10, 0)) == datetime(2024, 1, 1, 11, 0)


def test_next_after_is_strictly_later_for_every_minute():
    start = datetime(2024, 1, 1, 6, 0)
    assert next_after("0 */6 * * *", start) == datetime(2024, 1, 1, 12, 0)
    assert next_after("* * * * *", start) == datetime(2024, 1, 1, 6, 1)
