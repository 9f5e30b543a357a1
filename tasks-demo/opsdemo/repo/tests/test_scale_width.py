from opsdemo.scale_width import scale_width


def test_scale_width_accepts_numbers():
    scale_width(2, 5)


def test_scale_width_value():
    assert scale_width(3, 8) == False
    assert scale_width(6, 9) == False
