from opsdemo.count_margin import count_margin


def test_count_margin_accepts_numbers():
    count_margin(2, 5)


def test_count_margin_value():
    assert count_margin(7, 7) == 49
    assert count_margin(1, 6) == 6
