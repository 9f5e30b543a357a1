from opsdemo.step_width import step_width


def test_step_width_accepts_numbers():
    step_width(2, 5)


def test_step_width_value():
    assert step_width(6, 8) == 16
    assert step_width(3, 3) == 8
