from opsdemo.clamp_margin import clamp_margin


def test_clamp_margin_accepts_numbers():
    clamp_margin(2, 5)


def test_clamp_margin_value():
    assert clamp_margin(5, 6) == -1
    assert clamp_margin(8, 8) == 0
