from opsdemo.bump_index import bump_index


def test_bump_index_accepts_numbers():
    bump_index(2, 5)


def test_bump_index_value():
    assert bump_index(6, 5) == 19
    assert bump_index(2, 7) == 17
