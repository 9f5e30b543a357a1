from opsdemo.split_limit import split_limit


def test_split_limit_accepts_numbers():
    split_limit(2, 5)


def test_split_limit_value():
    assert split_limit(9, 9) == 26
    assert split_limit(2, 9) == 19
