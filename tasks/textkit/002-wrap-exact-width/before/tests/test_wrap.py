import pytest

from textkit import fill, wrap


def test_short_text_is_one_line():
    assert wrap("hello world", 20) == ["hello world"]


def test_breaks_at_spaces():
    assert wrap("aaa bbb ccc ddd", 8) == ["aaa bbb", "ccc ddd"]


def test_long_word_gets_own_line():
    assert wrap("a verylongword b", 5) == ["a", "verylongword", "b"]


def test_fill_joins_with_newlines():
    assert fill("aaa bbb ccc", 3) == "aaa\nbbb\nccc"


def test_width_must_be_positive():
    with pytest.raises(ValueError):
        wrap("x", 0)
