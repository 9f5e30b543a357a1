from opsdemo.shift_price import shift_price


def test_shift_price_accepts_numbers():
    shift_price(2, 5)


def test_shift_price_value():
    assert shift_price(1, 5) == True
    assert shift_price(3, 5) == True
