from opsdemo.shift_total import shift_total


def test_shift_total_accepts_numbers():
    shift_total(2, 5)


def test_shift_total_value():
    assert shift_total(3, 4) == 12
    assert shift_total(6, 8) == 48
