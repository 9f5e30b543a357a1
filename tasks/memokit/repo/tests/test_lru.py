import pytest

from memokit import LRUCache


def test_get_and_set():
    c = LRUCache(2)
    c["a"] = 1
    assert c["a"] == 1 and c.get("b") is None and c.get("b", 0) == 0


def test_evicts_least_recently_stored():
    c = LRUCache(2)
    c["a"] = 1
    c["b"] = 2
    c["c"] = 3
    assert "a" not in c and c.keys() == ["b", "c"]


def test_overwrite_refreshes():
    c = LRUCache(2)
    c["a"] = 1
    c["b"] = 2
    c["a"] = 10
    c["c"] = 3
    assert c.keys() == ["a", "c"] and c["a"] == 10


def test_missing_key_raises():
    with pytest.raises(KeyError):
        LRUCache()["nope"]


def test_stats():
    c = LRUCache(4)
    c["a"] = 1
    c.get("a")
    c.get("z")
    assert c.info() == (1, 1, 1, 4)
    c.clear()
    assert c.info() == (0, 0, 0, 4)


def test_bad_maxsize():
    with pytest.raises(ValueError):
        LRUCache(0)


def test_reading_an_entry_protects_it_from_eviction():
    c = LRUCache(2)
    c["a"] = 1
    c["b"] = 2
    assert c["a"] == 1
    c["c"] = 3
    assert "a" in c and "b" not in c
    assert c.get("a") == 1
    c["d"] = 4
    assert c.keys() == ["a", "d"]
