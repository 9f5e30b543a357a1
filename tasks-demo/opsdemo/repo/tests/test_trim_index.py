from opsdemo.trim_index import trim_index


def test_trim_index_accepts_numbers():
    trim_index(2, 5)


def test_trim_index_value():
    assert trim_index(8, 9) == 17
    assert trim_index(9, 2) == 11
