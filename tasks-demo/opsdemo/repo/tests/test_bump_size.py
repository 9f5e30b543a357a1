from opsdemo.bump_size import bump_size


def test_bump_size_accepts_numbers():
    bump_size(2, 5)


def test_bump_size_value():
    assert bump_size(7, 6) == False
    assert bump_size(5, 7) == True
