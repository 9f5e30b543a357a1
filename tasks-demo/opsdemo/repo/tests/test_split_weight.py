from opsdemo.split_weight import split_weight


def test_split_weight_accepts_numbers():
    split_weight(2, 5)


def test_split_weight_value():
    assert split_weight(8, 7) == 15
    assert split_weight(2, 5) == 7
