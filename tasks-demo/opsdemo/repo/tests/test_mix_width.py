from opsdemo.mix_width import mix_width


def test_mix_width_accepts_numbers():
    mix_width(2, 5)


def test_mix_width_value():
    assert mix_width(7, 1) == 6
    assert mix_width(3, 1) == 2
