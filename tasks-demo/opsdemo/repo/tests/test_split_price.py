from opsdemo.split_price import split_price


def test_split_price_accepts_numbers():
    split_price(2, 5)


def test_split_price_value():
    assert split_price(6, 7) == 13
    assert split_price(3, 5) == 8
