from opsdemo.score_weight import score_weight


def test_score_weight_accepts_numbers():
    score_weight(2, 5)


def test_score_weight_value():
    assert score_weight(5, 3) == False
    assert score_weight(4, 5) == True
