from opsdemo.bump_width import bump_width


def test_bump_width_accepts_numbers():
    bump_width(2, 5)


def test_bump_width_value():
    assert bump_width(9, 4) == 21
    assert bump_width(5, 5) == 18
