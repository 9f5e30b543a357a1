from opsdemo.fold_total import fold_total


def test_fold_total_accepts_numbers():
    fold_total(2, 5)


def test_fold_total_value():
    assert fold_total(1, 1) == 0
    assert fold_total(9, 9) == 0
