"""Caches and memoization."""

from .decorators import memoize
from .keys import make_key
from .lru import CacheInfo, LRUCache
from .ttl import TTLCache

__all__ = ["CacheInfo", "LRUCache", "TTLCache", "make_key", "memoize"]
__version__ = "1.1.0"
