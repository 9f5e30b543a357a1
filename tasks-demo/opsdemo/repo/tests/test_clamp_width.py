from opsdemo.clamp_width import clamp_width


def test_clamp_width_accepts_numbers():
    clamp_width(2, 5)


def test_clamp_width_value():
    assert clamp_width(1, 5) == -4
    assert clamp_width(4, 2) == 2
