from opsdemo.step_limit import step_limit


def test_step_limit_accepts_numbers():
    step_limit(2, 5)


def test_step_limit_value():
    assert step_limit(2, 5) == 7
    assert step_limit(7, 3) == 10
