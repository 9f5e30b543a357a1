from opsdemo.mix_margin import mix_margin


def test_mix_margin_accepts_numbers():
    mix_margin(2, 5)


def test_mix_margin_value():
    assert mix_margin(4, 1) == 7
    assert mix_margin(2, 6) == 10
