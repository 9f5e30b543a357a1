"""Splits configuration text into tokens."""

from collections import namedtuple

Token = namedtuple("Token", "kind value key lineno")
# kind: "section" (value = name), "pair" (key, value), "blank"


def strip_comment(text):
    """Remove a ``#`` or ``;`` comment that follows whitespace, outside quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "#;" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text


def tokenize(text):
    tokens = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            tokens.append(Token("blank", None, None, lineno))
        elif line.startswith("["):
            if not line.endswith("]"):
                raise SyntaxError("line %d: unterminated section header %r" % (lineno, line))
            tokens.append(Token("section", line[1:-1].strip(), None, lineno))
        else:
            sep = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
            if sep <= 0:
                raise SyntaxError("line %d: expected key = value, got %r" % (lineno, line))
            key = line[:sep].strip()
            value = strip_comment(line[sep + 1:].strip())
            tokens.append(Token("pair", value, key, lineno))
    return tokens
