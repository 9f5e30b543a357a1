from opsdemo.score_offset import score_offset


def test_score_offset_accepts_numbers():
    score_offset(2, 5)


def test_score_offset_value():
    assert score_offset(3, 4) == -1
    assert score_offset(4, 3) == 1
