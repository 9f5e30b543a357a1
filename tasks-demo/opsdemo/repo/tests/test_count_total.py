from opsdemo.count_total import count_total


def test_count_total_accepts_numbers():
    count_total(2, 5)


def test_count_total_value():
    assert count_total(7, 8) == 15
    assert count_total(5, 9) == 14
