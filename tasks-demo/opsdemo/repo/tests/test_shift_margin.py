from opsdemo.shift_margin import shift_margin


def test_shift_margin_accepts_numbers():
    shift_margin(2, 5)


def test_shift_margin_value():
    assert shift_margin(9, 4) == True
    assert shift_margin(1, 4) == False
