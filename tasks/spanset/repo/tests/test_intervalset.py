from spanset import Interval, IntervalSet, parse


def test_overlapping_intervals_merge():
    s = IntervalSet([Interval(0, 5), Interval(3, 8)])
    assert list(s) == [Interval(0, 8)]


def test_disjoint_intervals_stay_apart_and_sorted():
    s = IntervalSet([parse("[10, 12]"), parse("[0, 1]")])
    assert list(s) == [parse("[0, 1]"), parse("[10, 12]")]
    assert s.measure() == 3


def test_membership():
    s = IntervalSet([parse("[0, 1]"), parse("(2, 3)")])
    assert 1 in s and 2.5 in s and 2 not in s and 1.5 not in s


def test_union_and_intersection():
    a = IntervalSet([parse("[0, 10)")])
    b = IntervalSet([parse("[5, 20)"), parse("[30, 40)")])
    assert list(a | b) == [parse("[0, 20)"), parse("[30, 40)")]
    assert list(a & b) == [parse("[5, 10)")]


def test_empty_intervals_are_ignored():
    assert len(IntervalSet([Interval(3, 3)])) == 0


def test_adjacent_intervals_merge():
    s = IntervalSet([parse("[0, 5)"), parse("[5, 10)")])
    assert list(s) == [parse("[0, 10)")]
    assert 5 in s


def test_intervals_with_a_gap_of_one_point_do_not_merge():
    s = IntervalSet([parse("[0, 5)"), parse("(5, 10)")])
    assert len(s) == 2 and 5 not in s
