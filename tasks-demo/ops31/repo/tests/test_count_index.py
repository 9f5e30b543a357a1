from opsdemo.count_index import count_index


def test_count_index_accepts_numbers():
    count_index(2, 5)


def test_count_index_value():
    assert count_index(1, 6) == False
    assert count_index(1, 3) == False
