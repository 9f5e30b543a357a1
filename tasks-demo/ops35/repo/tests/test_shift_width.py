from opsdemo.shift_width import shift_width


def test_shift_width_accepts_numbers():
    shift_width(2, 5)


def test_shift_width_value():
    assert shift_width(8, 2) == 6
    assert shift_width(1, 7) == -6
