from opsdemo.score_margin import score_margin


def test_score_margin_accepts_numbers():
    score_margin(2, 5)


def test_score_margin_value():
    assert score_margin(2, 3) == 5
    assert score_margin(4, 7) == 11
