from opsdemo.blend_offset import blend_offset


def test_blend_offset_accepts_numbers():
    blend_offset(2, 5)


def test_blend_offset_value():
    assert blend_offset(7, 8) == 56
    assert blend_offset(4, 3) == 12
