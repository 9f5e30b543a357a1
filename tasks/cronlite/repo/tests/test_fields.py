import pytest

from cronlite.errors import CronSyntaxError
from cronlite.fields import DAY_OF_WEEK, HOUR, MINUTE, MONTH, parse_field


def test_star_is_every_value():
    assert parse_field("*", HOUR) == list(range(24))


def test_lists_and_ranges():
    assert parse_field("1,5,10-12", MINUTE) == [1, 5, 10, 11, 12]


def test_star_with_step():
    assert parse_field("*/15", MINUTE) == [0, 15, 30, 45]


def test_value_with_step_runs_to_end_of_field():
    assert parse_field("50/5", MINUTE) == [50, 55]


def test_month_and_day_names():
    assert parse_field("JAN,mar", MONTH) == [1, 3]
    assert parse_field("MON-FRI", DAY_OF_WEEK) == [1, 2, 3, 4, 5]


def test_seven_is_sunday():
    assert parse_field("7", DAY_OF_WEEK) == [0]


@pytest.mark.parametrize("text", ["60", "a", "5-1", "*/0", ""])
def test_bad_fields(text):
    with pytest.raises(CronSyntaxError):
        parse_field(text, MINUTE)


def test_error_names_the_field():
    with pytest.raises(CronSyntaxError) as info:
        parse_field("25", HOUR)
    assert info.value.field == "hour"
    assert "hour field" in str(info.value)


def test_range_with_step_includes_its_end():
    assert parse_field("0-30/10", MINUTE) == [0, 10, 20, 30]
    assert parse_field("9-17/4", HOUR) == [9, 13, 17]
