from opsdemo.bump_price import bump_price


def test_bump_price_accepts_numbers():
    bump_price(2, 5)


def test_bump_price_value():
    assert bump_price(2, 8) == -6
    assert bump_price(9, 9) == 0
