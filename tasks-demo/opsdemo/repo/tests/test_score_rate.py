from opsdemo.score_rate import score_rate


def test_score_rate_accepts_numbers():
    score_rate(2, 5)


def test_score_rate_value():
    assert score_rate(1, 7) == 8
    assert score_rate(8, 3) == 11
