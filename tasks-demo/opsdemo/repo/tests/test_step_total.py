from opsdemo.step_total import step_total


def test_step_total_accepts_numbers():
    step_total(2, 5)


def test_step_total_value():
    assert step_total(2, 7) == True
    assert step_total(7, 6) == False
