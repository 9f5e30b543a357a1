import pytest

from envfile import EnvSyntaxError, parse_lines


def values(text):
    return {k: v for k, v, _, _ in parse_lines(text)}


def test_plain_values_and_comments():
    assert values("# comment\nA=1\n\nB = two words  # trailing\n") == {"A": "1", "B": "two words"}


def test_export_prefix():
    assert values("export TOKEN=abc") == {"TOKEN": "abc"}


def test_double_quotes_and_escapes():
    assert values('MSG="line1\\nline2 \\"q\\""') == {"MSG": 'line1\nline2 "q"'}


def test_single_quotes_are_literal():
    assert values("P='a\\nb'") == {"P": "a\\nb"}


def test_hash_without_space_is_part_of_unquoted_value():
    assert values("URL=http://x/#anchor") == {"URL": "http://x/#anchor"}


def test_errors_carry_line_numbers():
    with pytest.raises(EnvSyntaxError) as info:
        parse_lines("A=1\nnot a binding\n")
    assert info.value.lineno == 2
    with pytest.raises(EnvSyntaxError):
        parse_lines('A="unterminated')
    with pytest.raises(EnvSyntaxError):
        parse_lines("1BAD=x")


def test_hash_inside_quotes_is_not_a_comment():
    assert values('PASSWORD="abc #123"  # the db password') == {"PASSWORD": "abc #123"}
    assert values("SECRET='x # y'") == {"SECRET": "x # y"}
