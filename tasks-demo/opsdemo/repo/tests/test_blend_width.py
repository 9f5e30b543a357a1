from opsdemo.blend_width import blend_width


def test_blend_width_accepts_numbers():
    blend_width(2, 5)


def test_blend_width_value():
    assert blend_width(9, 4) == 36
    assert blend_width(7, 3) == 21
