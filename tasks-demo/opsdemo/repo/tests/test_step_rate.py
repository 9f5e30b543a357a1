from opsdemo.step_rate import step_rate


def test_step_rate_accepts_numbers():
    step_rate(2, 5)


def test_step_rate_value():
    assert step_rate(5, 2) == 7
    assert step_rate(4, 2) == 6
