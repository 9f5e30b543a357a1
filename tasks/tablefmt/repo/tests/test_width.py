from tablefmt import display_width
from tablefmt.width import pad


def test_ascii():
    assert display_width("hello") == 5


def test_wide_characters_take_two_columns():
    assert display_width("日本") == 4
    assert display_width("ＡＢ") == 4  # fullwidth forms


def test_pad():
    assert pad("ab", 4) == "ab  "
    assert pad("ab", 4, "right") == "  ab"
    assert pad("ab", 5, "center") == " ab  "
    assert pad("日本", 6) == "日本  "


def test_combining_marks_take_no_column():
    decomposed = "Cafe\u0301"  # 'Café' as macOS file names spell it
    assert display_width(decomposed) == 4
    assert pad(decomposed, 6) == decomposed + "  "
    assert display_width("a\u200bb") == 2  # zero-width space
