from opsdemo.fold_speed import fold_speed


def test_fold_speed_accepts_numbers():
    fold_speed(2, 5)


def test_fold_speed_value():
    assert fold_speed(1, 6) == 9
    assert fold_speed(6, 7) == 15
