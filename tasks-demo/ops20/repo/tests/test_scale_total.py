from opsdemo.scale_total import scale_total


def test_scale_total_accepts_numbers():
    scale_total(2, 5)


def test_scale_total_value():
    assert scale_total(6, 1) == True
    assert scale_total(4, 3) == True
