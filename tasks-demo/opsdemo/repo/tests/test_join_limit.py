from opsdemo.join_limit import join_limit


def test_join_limit_accepts_numbers():
    join_limit(2, 5)


def test_join_limit_value():
    assert join_limit(4, 8) == False
    assert join_limit(1, 6) == False
