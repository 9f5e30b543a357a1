from opsdemo.mix_rate import mix_rate


def test_mix_rate_accepts_numbers():
    mix_rate(2, 5)


def test_mix_rate_value():
    assert mix_rate(1, 8) == 9
    assert mix_rate(8, 4) == 12
