from opsdemo.mix_level import mix_level


def test_mix_level_accepts_numbers():
    mix_level(2, 5)


def test_mix_level_value():
    assert mix_level(3, 9) == -6
    assert mix_level(3, 2) == 1
