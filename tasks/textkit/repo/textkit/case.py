"""Identifier case conversion."""

import re

_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_WORD_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")


def camel_to_snake(name):
    """'parseHTTPResponse' -> 'parse_http_response'; acronyms stay one word."""
    name = _ACRONYM_BOUNDARY.sub(r"\1_\2", name)
    name = _WORD_BOUNDARY.sub(r"\1_\2", name)
    return name.lower()


def snake_to_camel(name, upper_first=False):
    """'parse_http_response' -> 'parseHttpResponse' (or 'ParseHttpResponse')."""
    leading = len(name) - len(name.lstrip("_"))
    parts = [p for p in name.split("_") if p]
    if not parts:
        return name
    head = parts[0].capitalize() if upper_first else parts[0].lower()
    return "_" * leading + head + "".join(p.capitalize() for p in parts[1:])
