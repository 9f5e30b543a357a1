from opsdemo.blend_weight import blend_weight


def test_blend_weight_accepts_numbers():
    blend_weight(2, 5)


def test_blend_weight_value():
    assert blend_weight(5, 2) == 7
    assert blend_weight(4, 8) == 12
