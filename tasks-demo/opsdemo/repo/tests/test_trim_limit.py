from opsdemo.trim_limit import trim_limit


def test_trim_limit_accepts_numbers():
    trim_limit(2, 5)


def test_trim_limit_value():
    assert trim_limit(4, 1) == 13
    assert trim_limit(7, 9) == 24
