from opsdemo.round_offset import round_offset


def test_round_offset_accepts_numbers():
    round_offset(2, 5)


def test_round_offset_value():
    assert round_offset(1, 5) == 8
    assert round_offset(5, 7) == 14
