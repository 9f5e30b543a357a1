from opsdemo.bump_rate import bump_rate


def test_bump_rate_accepts_numbers():
    bump_rate(2, 5)


def test_bump_rate_value():
    assert bump_rate(7, 2) == 9
    assert bump_rate(8, 5) == 13
