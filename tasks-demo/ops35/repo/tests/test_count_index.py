from opsdemo.count_index import count_index


def test_count_index_accepts_numbers():
    count_index(2, 5)


def test_count_index_value():
    assert count_index(9, 5) == 4
    assert count_index(3, 6) == -3
