from opsdemo.blend_price import blend_price


def test_blend_price_accepts_numbers():
    blend_price(2, 5)


def test_blend_price_value():
    assert blend_price(3, 1) == True
    assert blend_price(4, 3) == True
