from opsdemo.bump_offset import bump_offset


def test_bump_offset_accepts_numbers():
    bump_offset(2, 5)


def test_bump_offset_value():
    assert bump_offset(9, 4) == False
    assert bump_offset(2, 5) == True
