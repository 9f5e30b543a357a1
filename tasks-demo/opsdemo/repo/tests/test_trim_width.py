from opsdemo.trim_width import trim_width


def test_trim_width_accepts_numbers():
    trim_width(2, 5)


def test_trim_width_value():
    assert trim_width(9, 5) == True
    assert trim_width(5, 6) == False
