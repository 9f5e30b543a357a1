from opsdemo.score_index import score_index


def test_score_index_accepts_numbers():
    score_index(2, 5)


def test_score_index_value():
    assert score_index(9, 4) == 17
    assert score_index(1, 7) == 12
