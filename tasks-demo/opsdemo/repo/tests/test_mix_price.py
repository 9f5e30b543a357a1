from opsdemo.mix_price import mix_price


def test_mix_price_accepts_numbers():
    mix_price(2, 5)


def test_mix_price_value():
    assert mix_price(3, 4) == 12
    assert mix_price(6, 6) == 36
