from opsdemo.score_price import score_price


def test_score_price_accepts_numbers():
    score_price(2, 5)


def test_score_price_value():
    assert score_price(5, 6) == 30
    assert score_price(6, 7) == 42
