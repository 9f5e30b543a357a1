from opsdemo.round_index import round_index


def test_round_index_accepts_numbers():
    round_index(2, 5)


def test_round_index_value():
    assert round_index(5, 6) == 17
    assert round_index(1, 5) == 12
