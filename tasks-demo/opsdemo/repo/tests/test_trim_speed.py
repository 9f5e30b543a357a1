from opsdemo.trim_speed import trim_speed


def test_trim_speed_accepts_numbers():
    trim_speed(2, 5)


def test_trim_speed_value():
    assert trim_speed(1, 9) == -8
    assert trim_speed(4, 8) == -4
