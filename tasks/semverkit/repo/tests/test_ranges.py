import pytest

from semverkit import InvalidRange, Range, satisfies


@pytest.mark.parametrize("version,rng,expected", [
    ("1.2.3", ">=1.2.0", True),
    ("1.2.3", ">=1.2.0 <1.2.3", False),
    ("1.2.3", ">= 1.0, < 2.0", True),
    ("1.9.9", "^1.2.3", True),
    ("2.0.0", "^1.2.3", False),
    ("1.2.9", "~1.2.3", True),
    ("1.3.0", "~1.2.3", False),
    ("1.4.0", "1.x", True),
    ("2.0.0", "1.x", False),
    ("3.1.4", "*", True),
    ("1.0.0", "<1.0.0 || >=2.0.0", False),
    ("2.5.0", "<1.0.0 || >=2.0.0", True),
])
def test_satisfies(version, rng, expected):
    assert satisfies(version, rng) is expected


def test_prereleases_only_match_ranges_that_name_them():
    assert not satisfies("1.3.0-rc.1", "^1.2.0")
    assert satisfies("1.3.0-rc.2", ">=1.3.0-rc.1")


def test_max_satisfying():
    assert str(Range("~2.1").max_satisfying(["2.0.9", "2.1.3", "2.1.11", "2.2.0"])) == "2.1.11"
    assert Range(">=5").max_satisfying(["1.0.0"]) is None


def test_bad_range():
    with pytest.raises(InvalidRange):
        Range("^banana")


@pytest.mark.parametrize("version,rng,expected", [
    ("0.2.5", "^0.2.3", True),
    ("0.3.0", "^0.2.3", False),
    ("0.9.0", "^0.2.3", False),
    ("0.0.3", "^0.0.3", True),
    ("0.0.4", "^0.0.3", False),
    ("0.5.0", "^0.x", True),
])
def test_caret_below_one_point_zero(version, rng, expected):
    assert satisfies(version, rng) is expected
