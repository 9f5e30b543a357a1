from opsdemo.split_rate import split_rate


def test_split_rate_accepts_numbers():
    split_rate(2, 5)


def test_split_rate_value():
    assert split_rate(6, 9) == 23
    assert split_rate(8, 4) == 20
