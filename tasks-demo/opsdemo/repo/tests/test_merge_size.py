from opsdemo.merge_size import merge_size


def test_merge_size_accepts_numbers():
    merge_size(2, 5)


def test_merge_size_value():
    assert merge_size(3, 9) == 27
    assert merge_size(6, 1) == 6
