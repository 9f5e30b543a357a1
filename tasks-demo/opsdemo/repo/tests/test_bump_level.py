from opsdemo.bump_level import bump_level


def test_bump_level_accepts_numbers():
    bump_level(2, 5)


def test_bump_level_value():
    assert bump_level(4, 1) == True
    assert bump_level(5, 4) == True
