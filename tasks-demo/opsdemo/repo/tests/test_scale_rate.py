from opsdemo.scale_rate import scale_rate


def test_scale_rate_accepts_numbers():
    scale_rate(2, 5)


def test_scale_rate_value():
    assert scale_rate(3, 3) == 9
    assert scale_rate(1, 1) == 1
