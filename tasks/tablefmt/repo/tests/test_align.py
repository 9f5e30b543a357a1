from tablefmt import column_alignments
from tablefmt.align import is_number


def test_text_columns_are_left_aligned():
    assert column_alignments([["a", "1"], ["b", "2"]], 2) == ["left", "right"]


def test_empty_cells_do_not_count():
    assert column_alignments([["1"], [""], ["3"]], 1) == ["right"]


def test_all_empty_column_is_left():
    assert column_alignments([[""], [""]], 1) == ["left"]


def test_numbers_in_every_notation():
    for text in ["-3", "2.50", "+7", "1e-3", "1,234.5", " 42 "]:
        assert is_number(text), text
    for text in ["nan", "inf", "v1", "1.2.3", "-"]:
        assert not is_number(text), text
