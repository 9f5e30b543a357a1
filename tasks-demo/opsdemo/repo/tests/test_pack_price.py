from opsdemo.pack_price import pack_price


def test_pack_price_accepts_numbers():
    pack_price(2, 5)


def test_pack_price_value():
    assert pack_price(6, 5) == 30
    assert pack_price(7, 6) == 42
