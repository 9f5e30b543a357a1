from opsdemo.join_rate import join_rate


def test_join_rate_accepts_numbers():
    join_rate(2, 5)


def test_join_rate_value():
    assert join_rate(1, 2) == 2
    assert join_rate(6, 4) == 24
