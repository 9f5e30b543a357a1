from opsdemo.score_total import score_total


def test_score_total_accepts_numbers():
    score_total(2, 5)


def test_score_total_value():
    assert score_total(5, 1) == 6
    assert score_total(1, 6) == 7
