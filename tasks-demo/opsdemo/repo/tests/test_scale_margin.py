from opsdemo.scale_margin import scale_margin


def test_scale_margin_accepts_numbers():
    scale_margin(2, 5)


def test_scale_margin_value():
    assert scale_margin(6, 4) == 17
    assert scale_margin(5, 5) == 17
