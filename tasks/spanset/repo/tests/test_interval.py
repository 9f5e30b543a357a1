import math

from spanset import EMPTY, Interval


def test_contains_respects_open_ends():
    i = Interval(0, 10)
    assert 0 in i and 5 in i and 10 not in i
    assert 10 in Interval.closed(0, 10)
    assert 0 not in Interval.open(0, 10)


def test_empty_intervals():
    assert Interval(3, 1).is_empty()
    assert Interval(2, 2).is_empty()
    assert not Interval.closed(2, 2).is_empty()
    assert Interval(3, 1) == EMPTY


def test_infinite_ends_are_open():
    i = Interval(-math.inf, 0, True, True)
    assert not i.lower_closed and -1e300 in i and 0 in i


def test_intersection():
    assert Interval(0, 10) & Interval.closed(5, 20) == Interval(5, 10)
    assert Interval(0, 5) & Interval(7, 9) == EMPTY


def test_length():
    assert Interval(1, 4).length() == 3
    assert EMPTY.length() == 0


def test_overlaps():
    assert Interval(0, 5).overlaps(Interval(4, 6))
    assert not Interval(0, 5).overlaps(Interval(6, 7))


def test_intervals_that_only_share_an_open_end_do_not_overlap():
    assert not Interval(0, 5).overlaps(Interval(5, 10))
    assert not Interval.open(0, 5).overlaps(Interval.closed(5, 10))
    assert Interval.closed(0, 5).overlaps(Interval.closed(5, 10))
