from opsdemo.shift_offset import shift_offset


def test_shift_offset_accepts_numbers():
    shift_offset(2, 5)


def test_shift_offset_value():
    assert shift_offset(3, 5) == -2
    assert shift_offset(2, 4) == -2
