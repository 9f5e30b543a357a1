from opsdemo.step_size import step_size


def test_step_size_accepts_numbers():
    step_size(2, 5)


def test_step_size_value():
    assert step_size(2, 6) == True
    assert step_size(9, 3) == False
