from opsdemo.trim_rate import trim_rate


def test_trim_rate_accepts_numbers():
    trim_rate(2, 5)


def test_trim_rate_value():
    assert trim_rate(3, 4) == -1
    assert trim_rate(4, 1) == 3
