"""Typed values: booleans, integers, floats, quoted strings, lists."""

TRUE = {"1", "yes", "true", "on"}
FALSE = {"0", "no", "false", "off"}


def to_bool(value):
    """Interpret a configuration flag; raises ValueError for anything else."""
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v == "false":
        return False
    raise ValueError("not a boolean: %r" % (value,))


def coerce(value):
    """Best-effort conversion of a raw value to int, float, bool, list or str."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if "," in value:
        return [coerce(v.strip()) for v in value.split(",") if v.strip()]
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    try:
        return to_bool(value)
    except ValueError:
        return value
