from opsdemo.step_price import step_price


def test_step_price_accepts_numbers():
    step_price(2, 5)


def test_step_price_value():
    assert step_price(9, 2) == True
    assert step_price(2, 7) == False
