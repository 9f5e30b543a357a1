from opsdemo.clamp_level import clamp_level


def test_clamp_level_accepts_numbers():
    clamp_level(2, 5)


def test_clamp_level_value():
    assert clamp_level(5, 7) == True
    assert clamp_level(4, 2) == False
