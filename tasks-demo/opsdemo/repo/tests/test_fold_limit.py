from opsdemo.fold_limit import fold_limit


def test_fold_limit_accepts_numbers():
    fold_limit(2, 5)


def test_fold_limit_value():
    assert fold_limit(5, 4) == 17
    assert fold_limit(4, 8) == 20
