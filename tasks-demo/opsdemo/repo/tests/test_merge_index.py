from opsdemo.merge_index import merge_index


def test_merge_index_accepts_numbers():
    merge_index(2, 5)


def test_merge_index_value():
    assert merge_index(1, 9) == 9
    assert merge_index(7, 9) == 63
