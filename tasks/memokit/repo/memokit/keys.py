"""Cache keys for function calls."""

_KWARGS_MARK = object()


def make_key(args, kwargs, typed=False):
    """The key of a call: equal for calls that must share a cached result.

    Keyword arguments are order-independent (``f(a=1, b=2)`` is ``f(b=2, a=1)``). With
    ``typed``, arguments of different types are kept apart (``f(1)`` vs ``f(1.0)``).
    """
    items = list(args)
    if kwargs:
        items.append(_KWARGS_MARK)
        for name in sorted(kwargs):
            items.extend((name, kwargs[name]))
    if typed:
        items.extend(type(v) for v in args)
        items.extend(type(kwargs[name]) for name in sorted(kwargs))
    return tuple(items)
