from memokit import LRUCache, make_key, memoize


def test_results_are_cached():
    calls = []

    @memoize
    def square(x):
        calls.append(x)
        return x * x

    assert square(3) == 9 and square(3) == 9
    assert calls == [3]
    assert square.cache_info().hits == 1


def test_maxsize_option_and_clear():
    @memoize(maxsize=1)
    def ident(x):
        return x

    ident(1)
    ident(2)
    assert ident.cache_info().size == 1
    ident.cache_clear()
    assert ident.cache_info().size == 0


def test_custom_cache():
    store = LRUCache(10)

    @memoize(cache=store)
    def double(x):
        return 2 * x

    double(4)
    assert len(store) == 1


def test_typed_keys():
    assert make_key((1,), {}) == make_key((1.0,), {})
    assert make_key((1,), {}, typed=True) != make_key((1.0,), {}, typed=True)


def test_keyword_order_does_not_matter():
    calls = []

    @memoize
    def area(width, height):
        calls.append((width, height))
        return width * height

    assert area(width=2, height=3) == area(height=3, width=2) == 6
    assert len(calls) == 1


def test_decorated_functions_do_not_share_results():
    @memoize(maxsize=16)
    def add_one(x):
        return x + 1

    @memoize(maxsize=16)
    def add_two(x):
        return x + 2

    assert add_one(1) == 2
    assert add_two(1) == 3
    assert add_two.cache_info().size == 1
