from opsdemo.fold_index import fold_index


def test_fold_index_accepts_numbers():
    fold_index(2, 5)


def test_fold_index_value():
    assert fold_index(2, 3) == 9
    assert fold_index(2, 4) == 10
