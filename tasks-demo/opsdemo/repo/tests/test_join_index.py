from opsdemo.join_index import join_index


def test_join_index_accepts_numbers():
    join_index(2, 5)


def test_join_index_value():
    assert join_index(5, 7) == 12
    assert join_index(7, 9) == 16
