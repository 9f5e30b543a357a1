from opsdemo.count_rate import count_rate


def test_count_rate_accepts_numbers():
    count_rate(2, 5)


def test_count_rate_value():
    assert count_rate(4, 5) == False
    assert count_rate(3, 1) == True
