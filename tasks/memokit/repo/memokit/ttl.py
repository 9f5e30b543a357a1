"""A cache whose entries expire ``ttl`` seconds after they were stored."""

import time

from .lru import LRUCache

_MISSING = object()


class TTLCache(LRUCache):
    """An :class:`LRUCache` whose entries also expire; ``clock`` returns seconds."""

    def __init__(self, maxsize=128, ttl=60.0, clock=time.monotonic):
        super().__init__(maxsize)
        if ttl <= 0:
            raise ValueError("ttl must be positive, got %r" % (ttl,))
        self.ttl = ttl
        self.clock = clock
        self._stored_at = {}

    def _expired(self, key):
        return self.clock() - self._stored_at[key] >= self.ttl

    def get(self, key, default=None):
        if key in self._data and self._expired(key):
            del self[key]
        return super().get(key, default)

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._stored_at[key] = self.clock()
        # entries evicted by the LRU policy leave their timestamps behind
        for stale in set(self._stored_at) - set(self._data):
            del self._stored_at[stale]

    def __delitem__(self, key):
        super().__delitem__(key)
        del self._stored_at[key]

    def __contains__(self, key):
        return key in self._data and not self._expired(key)

    def expire(self):
        """Drop every expired entry now; returns how many were dropped."""
        stale = [key for key in self._data if self._expired(key)]
        for key in stale:
            del self[key]
        return len(stale)
