"""Splitting .env text into (key, value, quote) bindings."""

import re

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "\\$"}


class EnvSyntaxError(ValueError):
    def __init__(self, message, lineno):
        super().__init__("line %d: %s" % (lineno, message))
        self.lineno = lineno


def _unquote_double(body):
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            # '\$' stays escaped so that interpolation leaves the dollar alone
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _value(rest, lineno):
    """The value after ``=``: ``(text, quote)`` with quote one of '', "'", '"'."""
    rest = rest.lstrip()
    if rest[:1] in ("'", '"'):
        quote = rest[0]
        end = 1
        while True:
            end = rest.find(quote, end)
            if end == -1:
                raise EnvSyntaxError("unterminated %s-quoted value" % quote, lineno)
            if quote == '"' and rest[end - 1] == "\\" and rest[end - 2:end] != "\\\\":
                end += 1
                continue
            break
        trailing = rest[end + 1:].strip()
        if trailing and not trailing.startswith("#"):
            raise EnvSyntaxError("text after the closing quote: %r" % trailing, lineno)
        body = rest[1:end]
        return (_unquote_double(body) if quote == '"' else body), quote
    # unquoted: a comment starts at a '#' preceded by whitespace
    match = re.search(r"\s#", rest)
    if match:
        rest = rest[:match.start()]
    return rest.strip(), ""


def parse_lines(text):
    """``[(key, value, quote, lineno)]`` for every binding in ``text``."""
    bindings = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export "):].lstrip()
        if "=" not in stripped:
            raise EnvSyntaxError("expected KEY=value, got %r" % stripped, lineno)
        key, rest = stripped.split("=", 1)
        key = key.strip()
        if not _KEY.match(key):
            raise EnvSyntaxError("%r is not a valid name" % key, lineno)
        value, quote = _value(rest, lineno)
        bindings.append((key, value, quote, lineno))
    return bindings
