import pytest

from memokit import TTLCache


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_entry_expires_after_ttl():
    clock = FakeClock()
    c = TTLCache(ttl=10, clock=clock)
    c["a"] = 1
    clock.now += 9.5
    assert c.get("a") == 1
    clock.now += 0.5
    assert c.get("a") is None and "a" not in c


def test_overwrite_restarts_the_timer():
    clock = FakeClock()
    c = TTLCache(ttl=10, clock=clock)
    c["a"] = 1
    clock.now += 8
    c["a"] = 2
    clock.now += 8
    assert c["a"] == 2


def test_expire_drops_stale_entries():
    clock = FakeClock()
    c = TTLCache(ttl=5, clock=clock)
    c["a"] = 1
    clock.now += 3
    c["b"] = 2
    clock.now += 3
    assert c.expire() == 1 and c.keys() == ["b"]


def test_lru_eviction_still_applies():
    c = TTLCache(maxsize=1, ttl=100, clock=FakeClock())
    c["a"] = 1
    c["b"] = 2
    assert c.keys() == ["b"]


def test_bad_ttl():
    with pytest.raises(ValueError):
        TTLCache(ttl=0)


def test_caches_keep_their_own_timestamps():
    clock = FakeClock()
    first = TTLCache(ttl=10, clock=clock)
    second = TTLCache(ttl=10, clock=clock)
    first["k"] = 1
    clock.now += 8
    second["k"] = 2
    clock.now += 5
    assert first.get("k") is None
    assert second.get("k") == 2
    first["a"] = 1
    second["b"] = 2
    assert first.get("a") == 1 and "a" in first
