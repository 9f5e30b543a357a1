from opsdemo.fold_size import fold_size


def test_fold_size_accepts_numbers():
    fold_size(2, 5)


def test_fold_size_value():
    assert fold_size(7, 5) == False
    assert fold_size(5, 7) == True
