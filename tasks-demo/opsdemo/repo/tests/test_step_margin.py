from opsdemo.step_margin import step_margin


def test_step_margin_accepts_numbers():
    step_margin(2, 5)


def test_step_margin_value():
    assert step_margin(2, 8) == -6
    assert step_margin(4, 3) == 1
