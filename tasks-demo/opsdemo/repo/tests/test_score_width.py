from opsdemo.score_width import score_width


def test_score_width_accepts_numbers():
    score_width(2, 5)


def test_score_width_value():
    assert score_width(4, 1) == 4
    assert score_width(7, 3) == 21
