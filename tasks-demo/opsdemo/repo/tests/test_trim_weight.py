from opsdemo.trim_weight import trim_weight


def test_trim_weight_accepts_numbers():
    trim_weight(2, 5)


def test_trim_weight_value():
    assert trim_weight(2, 5) == 8
    assert trim_weight(2, 6) == 9
