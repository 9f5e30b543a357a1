from opsdemo.clamp_price import clamp_price


def test_clamp_price_accepts_numbers():
    clamp_price(2, 5)


def test_clamp_price_value():
    assert clamp_price(5, 1) == 4
    assert clamp_price(6, 6) == 0
