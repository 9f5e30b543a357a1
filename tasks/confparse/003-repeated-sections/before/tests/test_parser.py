import pytest

from confparse import ParseError, loads


def test_two_sections():
    assert loads("[a]\nx = 1\n[b]\ny = 2\n") == {"a": {"x": 1}, "b": {"y": 2}}


def test_untyped():
    assert loads("[a]\nx = 1\n", typed=False) == {"a": {"x": "1"}}


def test_key_outside_section():
    with pytest.raises(ParseError):
        loads("x = 1\n")


def test_later_key_wins():
    assert loads("[a]\nx = 1\nx = 2\n") == {"a": {"x": 2}}
