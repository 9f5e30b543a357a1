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


def test_inline_comment_is_stripped():
    assert loads("[s]\nport = 8080  # default port\n") == {"s": {"port": 8080}}
    assert loads("[s]\nname = web ; the name\n") == {"s": {"name": "web"}}


def test_hash_inside_quotes_or_words_is_kept():
    conf = loads("[s]\ncolor = \"#ff0000\" # red\nchannel = irc#main\n")
    assert conf == {"s": {"color": "#ff0000", "channel": "irc#main"}}
