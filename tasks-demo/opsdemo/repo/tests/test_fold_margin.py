from opsdemo.fold_margin import fold_margin


def test_fold_margin_accepts_numbers():
    fold_margin(2, 5)


def test_fold_margin_value():
    assert fold_margin(4, 5) == 12
    assert fold_margin(1, 4) == 8
