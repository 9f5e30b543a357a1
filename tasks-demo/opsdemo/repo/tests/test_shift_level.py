from opsdemo.shift_level import shift_level


def test_shift_level_accepts_numbers():
    shift_level(2, 5)


def test_shift_level_value():
    assert shift_level(8, 3) == 5
    assert shift_level(4, 8) == -4
