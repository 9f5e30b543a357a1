from opsdemo.trim_level import trim_level


def test_trim_level_accepts_numbers():
    trim_level(2, 5)


def test_trim_level_value():
    assert trim_level(8, 2) == 16
    assert trim_level(9, 1) == 9
