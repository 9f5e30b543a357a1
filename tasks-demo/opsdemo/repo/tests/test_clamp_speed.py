from opsdemo.clamp_speed import clamp_speed


def test_clamp_speed_accepts_numbers():
    clamp_speed(2, 5)


def test_clamp_speed_value():
    assert clamp_speed(8, 2) == 18
    assert clamp_speed(7, 8) == 23
