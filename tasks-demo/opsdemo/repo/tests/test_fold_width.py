from opsdemo.fold_width import fold_width


def test_fold_width_accepts_numbers():
    fold_width(2, 5)


def test_fold_width_value():
    assert fold_width(4, 4) == 8
    assert fold_width(8, 3) == 11
