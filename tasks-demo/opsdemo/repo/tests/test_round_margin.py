from opsdemo.round_margin import round_margin


def test_round_margin_accepts_numbers():
    round_margin(2, 5)


def test_round_margin_value():
    assert round_margin(6, 1) == False
    assert round_margin(7, 8) == True
