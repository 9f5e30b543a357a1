from opsdemo.bump_limit import bump_limit


def test_bump_limit_accepts_numbers():
    bump_limit(2, 5)


def test_bump_limit_value():
    assert bump_limit(2, 1) == 1
    assert bump_limit(4, 2) == 2
