from opsdemo.join_price import join_price


def test_join_price_accepts_numbers():
    join_price(2, 5)


def test_join_price_value():
    assert join_price(3, 6) == 9
    assert join_price(9, 2) == 11
