"""``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` in values."""

import re

_REFERENCE = re.compile(
    r"\\\$|\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, lookup):
    """Replace references with values from ``lookup`` (a mapping); unknown names become ''.

    ``${VAR:-default}`` uses the default when VAR is unset or empty, ``${VAR-default}`` only
    when it is unset (as in POSIX shells). ``\\$`` is a literal dollar.
    """
    def replace(match):
        if match.group(0) == "\\$":
            return "$"
        name = match.group("braced") or match.group("bare")
        current = lookup.get(name)
        op = match.group("op")
        if op == ":-" and not current:
            return match.group("default")
        if op == "-" and current is None:
            return match.group("default")
        return current or ""
    return _REFERENCE.sub(replace, value)
