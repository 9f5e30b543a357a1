from opsdemo.blend_speed import blend_speed


def test_blend_speed_accepts_numbers():
    blend_speed(2, 5)


def test_blend_speed_value():
    assert blend_speed(2, 6) == 12
    assert blend_speed(2, 3) == 6
