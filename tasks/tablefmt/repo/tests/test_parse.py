import pytest

from tablefmt import TableSyntaxError, parse, render


def test_parse_simple_table():
    headers, rows, aligns = parse("| a | b |\n|---|--:|\n| 1 | 2 |\n| 3 | 4 |\n")
    assert headers == ["a", "b"]
    assert rows == [["1", "2"], ["3", "4"]]
    assert aligns == ["left", "right"]


def test_outer_pipes_are_optional():
    headers, rows, aligns = parse("a | b\n:-: | ---\nx | y")
    assert headers == ["a", "b"] and rows == [["x", "y"]] and aligns == ["center", "left"]


def test_short_rows_are_padded():
    _, rows, _ = parse("| a | b |\n|---|---|\n| 1 |")
    assert rows == [["1", ""]]


def test_not_a_table():
    with pytest.raises(TableSyntaxError):
        parse("| a | b |\n| x | y |")
    with pytest.raises(TableSyntaxError):
        parse("just text")


def test_escaped_pipes_stay_in_their_cell():
    headers, rows, _ = parse("| expr | meaning |\n|---|---|\n| a \\| b | a or b |")
    assert headers == ["expr", "meaning"]
    assert rows == [["a | b", "a or b"]]


def test_render_then_parse_round_trips():
    rows = [["x|y", "1"], ["z", "22"]]
    headers, parsed, aligns = parse(render(rows, headers=["name", "n"]))
    assert headers == ["name", "n"] and parsed == rows and aligns == ["left", "right"]
