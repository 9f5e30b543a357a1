from opsdemo.mix_speed import mix_speed


def test_mix_speed_accepts_numbers():
    mix_speed(2, 5)


def test_mix_speed_value():
    assert mix_speed(6, 5) == 11
    assert mix_speed(5, 3) == 8
