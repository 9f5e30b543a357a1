from opsdemo.bump_total import bump_total


def test_bump_total_accepts_numbers():
    bump_total(2, 5)


def test_bump_total_value():
    assert bump_total(8, 4) == 32
    assert bump_total(2, 4) == 8
