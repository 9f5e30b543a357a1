from opsdemo.clamp_rate import clamp_rate


def test_clamp_rate_accepts_numbers():
    clamp_rate(2, 5)


def test_clamp_rate_value():
    assert clamp_rate(8, 2) == True
    assert clamp_rate(9, 4) == True
