from opsdemo.shift_weight import shift_weight


def test_shift_weight_accepts_numbers():
    shift_weight(2, 5)


def test_shift_weight_value():
    assert shift_weight(4, 1) == 4
    assert shift_weight(5, 9) == 45
