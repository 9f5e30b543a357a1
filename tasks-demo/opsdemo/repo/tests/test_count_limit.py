from opsdemo.count_limit import count_limit


def test_count_limit_accepts_numbers():
    count_limit(2, 5)


def test_count_limit_value():
    assert count_limit(2, 5) == 10
    assert count_limit(1, 8) == 8
