from opsdemo.fold_offset import fold_offset


def test_fold_offset_accepts_numbers():
    fold_offset(2, 5)


def test_fold_offset_value():
    assert fold_offset(2, 5) == True
    assert fold_offset(8, 2) == False
