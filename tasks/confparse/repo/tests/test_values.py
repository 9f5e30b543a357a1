import pytest

from confparse import coerce, to_bool


def test_numbers():
    assert coerce("42") == 42
    assert coerce("2.5") == 2.5


def test_quoted_strings_stay_strings():
    assert coerce("'42'") == "42"


def test_lists():
    assert coerce("a, b, 3") == ["a", "b", 3]


def test_true_values():
    for v in ("yes", "TRUE", "on", "1"):
        assert to_bool(v) is True


def test_not_a_bool():
    with pytest.raises(ValueError):
        to_bool("maybe")


def test_false_values():
    for v in ("no", "False", "off", "OFF"):
        assert to_bool(v) is False


def test_coerce_off_is_false():
    assert coerce("off") is False
    assert coerce("no") is False
