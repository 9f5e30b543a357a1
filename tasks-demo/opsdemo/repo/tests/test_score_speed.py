from opsdemo.score_speed import score_speed


def test_score_speed_accepts_numbers():
    score_speed(2, 5)


def test_score_speed_value():
    assert score_speed(7, 8) == 20
    assert score_speed(1, 1) == 7
