from opsdemo.split_size import split_size


def test_split_size_accepts_numbers():
    split_size(2, 5)


def test_split_size_value():
    assert split_size(7, 8) == 18
    assert split_size(8, 1) == 12
