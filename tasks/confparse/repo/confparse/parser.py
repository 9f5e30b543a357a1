"""Parses tokens into a dict of sections."""

from .lexer import tokenize
from .values import coerce


class ParseError(ValueError):
    pass


def loads(text, typed=True):
    """Parse configuration text into ``{section: {key: value}}``.

    A section that appears more than once is merged; a key repeated later wins.
    Keys before the first section header are an error.
    """
    result = {}
    current = None
    for tok in tokenize(text):
        if tok.kind == "section":
            current = result.setdefault(tok.value, {})
        elif tok.kind == "pair":
            if current is None:
                raise ParseError("line %d: key %r outside of any section" % (tok.lineno, tok.key))
            current[tok.key] = coerce(tok.value) if typed else tok.value
    return result
