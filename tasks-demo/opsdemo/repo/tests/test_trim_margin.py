from opsdemo.trim_margin import trim_margin


def test_trim_margin_accepts_numbers():
    trim_margin(2, 5)


def test_trim_margin_value():
    assert trim_margin(9, 5) == True
    assert trim_margin(4, 5) == False
