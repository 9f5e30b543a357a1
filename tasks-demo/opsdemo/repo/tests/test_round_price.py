from opsdemo.round_price import round_price


def test_round_price_accepts_numbers():
    round_price(2, 5)


def test_round_price_value():
    assert round_price(2, 7) == 9
    assert round_price(5, 4) == 9
