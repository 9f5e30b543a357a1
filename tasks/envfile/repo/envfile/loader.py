"""Loading bindings into dictionaries and the environment."""

import os

from .interpolate import interpolate
from .lexer import parse_lines


def loads(text, environ=None):
    """The variables of ``text`` as a dict; references see earlier keys, then ``environ``.

    Single-quoted values are literal: no escapes, no interpolation.
    """
    environ = os.environ if environ is None else environ
    result = {}
    for key, value, quote, _ in parse_lines(text):
        if quote != "'":
            value = interpolate(value, _Chain(result, environ))
        result[key] = value
    return result


class _Chain:
    """Lookup in the file's own keys first, then in the environment."""

    def __init__(self, first, second):
        self.first = first
        self.second = second

    def get(self, name, default=None):
        if name in self.first:
            return self.first[name]
        return self.second.get(name, default)


def load(path, environ=None, encoding="utf-8"):
    with open(path, encoding=encoding) as handle:
        return loads(handle.read(), environ)


def load_into(path, environ=None, override=False, encoding="utf-8"):
    """Set the file's variables in ``environ`` (``os.environ`` by default).

    Variables that are already set keep their value unless ``override`` is true. Returns the
    names that were set.
    """
    environ = os.environ if environ is None else environ
    values = load(path, environ, encoding)
    changed = []
    for key, value in values.items():
        if override or key not in environ:
            environ[key] = value
            changed.append(key)
    return changed
