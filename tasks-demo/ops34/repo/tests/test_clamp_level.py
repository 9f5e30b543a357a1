from opsdemo.clamp_level import clamp_level


def test_clamp_level_accepts_numbers():
    clamp_level(2, 5)


def test_clamp_level_value():
    assert clamp_level(8, 2) == 16
    assert clamp_level(7, 1) == 7
