from opsdemo.join_size import join_size


def test_join_size_accepts_numbers():
    join_size(2, 5)


def test_join_size_value():
    assert join_size(6, 9) == 18
    assert join_size(6, 3) == 12
