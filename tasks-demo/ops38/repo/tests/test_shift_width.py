from opsdemo.shift_width import shift_width


def test_shift_width_accepts_numbers():
    shift_width(2, 5)


def test_shift_width_value():
    assert shift_width(5, 1) == 14
    assert shift_width(4, 6) == 18
