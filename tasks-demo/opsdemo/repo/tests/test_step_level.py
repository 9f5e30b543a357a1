from opsdemo.step_level import step_level


def test_step_level_accepts_numbers():
    step_level(2, 5)


def test_step_level_value():
    assert step_level(1, 5) == False
    assert step_level(8, 2) == True
