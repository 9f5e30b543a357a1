from opsdemo.bump_weight import bump_weight


def test_bump_weight_accepts_numbers():
    bump_weight(2, 5)


def test_bump_weight_value():
    assert bump_weight(2, 6) == 12
    assert bump_weight(9, 2) == 18
