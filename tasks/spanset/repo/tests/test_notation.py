import math

import pytest

from spanset import EMPTY, Interval, IntervalSyntaxError, format_interval, parse


def test_parse_closed_and_open_ends():
    assert parse("[1, 5)") == Interval(1, 5, True, False)
    assert parse("(1, 5]") == Interval(1, 5, False, True)


def test_parse_infinite_bounds():
    i = parse("(-inf, 0]")
    assert i.lower == -math.inf and i.upper == 0 and i.upper_closed


def test_parse_empty():
    assert parse("{}") == EMPTY


@pytest.mark.parametrize("text", ["1, 5", "[1 5]", "[1, 2, 3]", "[a, b]", "[nan, 1]", "[]"])
def test_bad_notation(text):
    with pytest.raises(IntervalSyntaxError):
        parse(text)


def test_round_trip():
    for text in ["[1, 5)", "(-inf, 0]", "{}"]:
        assert format_interval(parse(text)) == text


def test_decimal_and_exponent_bounds():
    assert parse("[0.5, 1.5)") == Interval(0.5, 1.5)
    assert parse("[-2.5, 1e3]") == Interval(-2.5, 1000.0, True, True)
    assert parse("[1, 2.0]").upper == 2.0
    assert format_interval(parse("(0.5, 2.25]")) == "(0.5, 2.25]"
