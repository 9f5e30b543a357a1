from opsdemo.blend_speed import blend_speed


def test_blend_speed_accepts_numbers():
    blend_speed(2, 5)


def test_blend_speed_value():
    assert blend_speed(5, 5) == 16
    assert blend_speed(4, 5) == 15
