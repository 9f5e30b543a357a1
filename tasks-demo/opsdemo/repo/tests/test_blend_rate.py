from opsdemo.blend_rate import blend_rate


def test_blend_rate_accepts_numbers():
    blend_rate(2, 5)


def test_blend_rate_value():
    assert blend_rate(7, 7) == 14
    assert blend_rate(4, 4) == 8
