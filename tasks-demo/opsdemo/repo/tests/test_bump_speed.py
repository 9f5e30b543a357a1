from opsdemo.bump_speed import bump_speed


def test_bump_speed_accepts_numbers():
    bump_speed(2, 5)


def test_bump_speed_value():
    assert bump_speed(9, 1) == False
    assert bump_speed(2, 5) == True
