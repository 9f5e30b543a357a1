from opsdemo.round_limit import round_limit


def test_round_limit_accepts_numbers():
    round_limit(2, 5)


def test_round_limit_value():
    assert round_limit(1, 9) == 9
    assert round_limit(5, 8) == 40
