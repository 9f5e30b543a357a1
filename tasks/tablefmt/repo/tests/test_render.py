import pytest

from tablefmt import render


def test_numbers_right_aligned_text_left():
    out = render([["apples", 3], ["kiwis", 12]], headers=["fruit", "count"])
    assert out.splitlines() == [
        "| fruit  | count |",
        "| ------ | ----: |",
        "| apples |     3 |",
        "| kiwis  |    12 |",
    ]


def test_explicit_alignment_and_short_rows():
    out = render([["a"], ["bb", "x"]], headers=["k", "v"], align=["center", "left"])
    assert out.splitlines() == [
        "| k   | v   |",
        "| :-: | --- |",
        "|  a  |     |",
        "| bb  | x   |",
    ]


def test_pipes_and_newlines_in_cells_are_escaped():
    out = render([["a|b", "x\ny"]], headers=["p", "q"])
    assert out.splitlines()[2] == "| a\\|b | x y |"


def test_floatfmt():
    out = render([[1.5], [2.25]], headers=["n"], floatfmt=".2f")
    assert out.splitlines()[2:] == ["| 1.50 |", "| 2.25 |"]


def test_too_many_cells():
    with pytest.raises(ValueError):
        render([[1, 2]], headers=["one"])


def test_wide_characters_are_aligned():
    out = render([["東京", 1], ["Paris", 2]], headers=["city", "n"])
    assert out.splitlines()[2:] == ["| 東京  |   1 |", "| Paris |   2 |"]


def test_negative_and_decimal_numbers_are_right_aligned():
    out = render([["-4", "1.5"], ["12", "10.25"]], headers=["delta", "ratio"])
    assert out.splitlines() == [
        "| delta | ratio |",
        "| ----: | ----: |",
        "|    -4 |   1.5 |",
        "|    12 | 10.25 |",
    ]
