from opsdemo.merge_price import merge_price


def test_merge_price_accepts_numbers():
    merge_price(2, 5)


def test_merge_price_value():
    assert merge_price(6, 6) == 19
    assert merge_price(7, 4) == 18
