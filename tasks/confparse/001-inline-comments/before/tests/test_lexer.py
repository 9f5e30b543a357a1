import pytest

from confparse import loads, tokenize


def test_sections_and_pairs():
    kinds = [t.kind for t in tokenize("[a]\nx = 1\n\n# c\n")]
    assert kinds == ["section", "pair", "blank", "blank"]


def test_colon_separator():
    assert loads("[s]\nname: value\n") == {"s": {"name": "value"}}


def test_full_line_comments_ignored():
    assert loads("; top\n[s]\n# note\nk = v\n") == {"s": {"k": "v"}}


def test_missing_separator_is_an_error():
    with pytest.raises(SyntaxError):
        tokenize("[s]\njustakey\n")
