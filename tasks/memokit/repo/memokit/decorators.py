"""The memoizing decorator."""

import functools

from .keys import make_key
from .lru import LRUCache


def memoize(func=None, *, maxsize=128, typed=False, cache=None):
    """Cache the results of ``func`` by its arguments.

    Each decorated function gets its own :class:`LRUCache` of ``maxsize`` entries unless a
    ``cache`` (any mapping with ``get``) is given.  Usable as ``@memoize`` or
    ``@memoize(maxsize=...)``.
    """
    def decorate(function):
        store = LRUCache(maxsize) if cache is None else cache
        missing = object()

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            key = make_key(args, kwargs, typed)
            result = store.get(key, missing)
            if result is missing:
                result = function(*args, **kwargs)
                store[key] = result
            return result

        def cache_info():
            return store.info()

        def cache_clear():
            store.clear()

        wrapper.cache = store
        wrapper.cache_info = cache_info
        wrapper.cache_clear = cache_clear
        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
