from opsdemo.count_width import count_width


def test_count_width_accepts_numbers():
    count_width(2, 5)


def test_count_width_value():
    assert count_width(6, 3) == 18
    assert count_width(5, 7) == 35
