from opsdemo.merge_price import merge_price


def test_merge_price_accepts_numbers():
    merge_price(2, 5)


def test_merge_price_value():
    assert merge_price(1, 4) == 5
    assert merge_price(5, 8) == 13
