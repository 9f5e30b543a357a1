from opsdemo.scale_offset import scale_offset


def test_scale_offset_accepts_numbers():
    scale_offset(2, 5)


def test_scale_offset_value():
    assert scale_offset(7, 4) == 28
    assert scale_offset(8, 3) == 24
