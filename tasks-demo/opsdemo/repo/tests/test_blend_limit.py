from opsdemo.blend_limit import blend_limit


def test_blend_limit_accepts_numbers():
    blend_limit(2, 5)


def test_blend_limit_value():
    assert blend_limit(8, 2) == 11
    assert blend_limit(1, 5) == 7
