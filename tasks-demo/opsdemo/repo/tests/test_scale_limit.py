from opsdemo.scale_limit import scale_limit


def test_scale_limit_accepts_numbers():
    scale_limit(2, 5)


def test_scale_limit_value():
    assert scale_limit(9, 4) == 13
    assert scale_limit(8, 9) == 17
