from opsdemo.mix_limit import mix_limit


def test_mix_limit_accepts_numbers():
    mix_limit(2, 5)


def test_mix_limit_value():
    assert mix_limit(5, 7) == 15
    assert mix_limit(5, 4) == 12
