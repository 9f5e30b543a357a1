from opsdemo.fold_weight import fold_weight


def test_fold_weight_accepts_numbers():
    fold_weight(2, 5)


def test_fold_weight_value():
    assert fold_weight(5, 7) == 14
    assert fold_weight(9, 4) == 15
