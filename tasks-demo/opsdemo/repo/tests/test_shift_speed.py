from opsdemo.shift_speed import shift_speed


def test_shift_speed_accepts_numbers():
    shift_speed(2, 5)


def test_shift_speed_value():
    assert shift_speed(3, 2) == 5
    assert shift_speed(4, 8) == 12
