from opsdemo.bump_margin import bump_margin


def test_bump_margin_accepts_numbers():
    bump_margin(2, 5)


def test_bump_margin_value():
    assert bump_margin(3, 8) == 11
    assert bump_margin(7, 6) == 13
