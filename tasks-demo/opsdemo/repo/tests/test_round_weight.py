from opsdemo.round_weight import round_weight


def test_round_weight_accepts_numbers():
    round_weight(2, 5)


def test_round_weight_value():
    assert round_weight(6, 6) == 13
    assert round_weight(9, 3) == 13
