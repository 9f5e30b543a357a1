from opsdemo.fold_level import fold_level


def test_fold_level_accepts_numbers():
    fold_level(2, 5)


def test_fold_level_value():
    assert fold_level(7, 1) == False
    assert fold_level(4, 1) == False
