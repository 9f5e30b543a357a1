from opsdemo.count_weight import count_weight


def test_count_weight_accepts_numbers():
    count_weight(2, 5)


def test_count_weight_value():
    assert count_weight(8, 8) == 22
    assert count_weight(5, 4) == 15
