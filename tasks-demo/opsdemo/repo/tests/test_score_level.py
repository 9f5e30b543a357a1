from opsdemo.score_level import score_level


def test_score_level_accepts_numbers():
    score_level(2, 5)


def test_score_level_value():
    assert score_level(1, 3) == -2
    assert score_level(7, 8) == -1
