from opsdemo.split_total import split_total


def test_split_total_accepts_numbers():
    split_total(2, 5)


def test_split_total_value():
    assert split_total(8, 1) == 13
    assert split_total(2, 1) == 7
