"""Least-recently-used cache."""

from collections import OrderedDict, namedtuple

CacheInfo = namedtuple("CacheInfo", "hits misses size maxsize")

_MISSING = object()


class LRUCache:
    """A mapping of at most ``maxsize`` entries; the least recently used one is evicted first.

    Reading an entry (``get`` or ``[]``) counts as a use.
    """

    def __init__(self, maxsize=128):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1, got %r" % (maxsize,))
        self.maxsize = maxsize
        self._data = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key, default=None):
        value = self._data.get(key, _MISSING)
        if value is _MISSING:
            self.misses += 1
            return default
        self.hits += 1
        self._data.move_to_end(key)
        return value

    def __getitem__(self, key):
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key, value):
        if key in self._data:
            self._data.move_to_end(key)
        self._data[key] = value
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __delitem__(self, key):
        del self._data[key]

    def __contains__(self, key):
        # a membership test is not a use and not a hit
        return key in self._data

    def __len__(self):
        return len(self._data)

    def keys(self):
        """Keys from the least to the most recently used."""
        return list(self._data)

    def clear(self):
        self._data.clear()
        self.hits = self.misses = 0

    def info(self):
        return CacheInfo(self.hits, self.misses, len(self._data), self.maxsize)
