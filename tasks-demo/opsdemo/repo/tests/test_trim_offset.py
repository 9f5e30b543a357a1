from opsdemo.trim_offset import trim_offset


def test_trim_offset_accepts_numbers():
    trim_offset(2, 5)


def test_trim_offset_value():
    assert trim_offset(5, 2) == 9
    assert trim_offset(3, 4) == 9
