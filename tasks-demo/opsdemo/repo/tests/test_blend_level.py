from opsdemo.blend_level import blend_level


def test_blend_level_accepts_numbers():
    blend_level(2, 5)


def test_blend_level_value():
    assert blend_level(2, 4) == 8
    assert blend_level(4, 4) == 16
