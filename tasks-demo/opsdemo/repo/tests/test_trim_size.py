from opsdemo.trim_size import trim_size


def test_trim_size_accepts_numbers():
    trim_size(2, 5)


def test_trim_size_value():
    assert trim_size(6, 7) == -1
    assert trim_size(1, 7) == -6
