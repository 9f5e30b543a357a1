from opsdemo.round_level import round_level


def test_round_level_accepts_numbers():
    round_level(2, 5)


def test_round_level_value():
    assert round_level(5, 8) == 13
    assert round_level(1, 5) == 6
