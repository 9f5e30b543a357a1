from opsdemo.scale_total import scale_total


def test_scale_total_accepts_numbers():
    scale_total(2, 5)


def test_scale_total_value():
    assert scale_total(8, 9) == 17
    assert scale_total(5, 2) == 7
