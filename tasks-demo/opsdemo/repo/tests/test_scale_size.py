from opsdemo.scale_size import scale_size


def test_scale_size_accepts_numbers():
    scale_size(2, 5)


def test_scale_size_value():
    assert scale_size(8, 9) == 17
    assert scale_size(9, 6) == 15
