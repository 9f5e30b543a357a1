from opsdemo.shift_limit import shift_limit


def test_shift_limit_accepts_numbers():
    shift_limit(2, 5)


def test_shift_limit_value():
    assert shift_limit(6, 7) == True
    assert shift_limit(5, 1) == False
