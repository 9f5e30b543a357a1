from opsdemo.clamp_offset import clamp_offset


def test_clamp_offset_accepts_numbers():
    clamp_offset(2, 5)


def test_clamp_offset_value():
    assert clamp_offset(3, 2) == 5
    assert clamp_offset(4, 9) == 13
