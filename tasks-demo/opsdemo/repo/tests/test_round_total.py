from opsdemo.round_total import round_total


def test_round_total_accepts_numbers():
    round_total(2, 5)


def test_round_total_value():
    assert round_total(6, 4) == 12
    assert round_total(3, 9) == 14
