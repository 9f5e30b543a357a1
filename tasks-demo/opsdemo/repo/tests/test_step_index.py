from opsdemo.step_index import step_index


def test_step_index_accepts_numbers():
    step_index(2, 5)


def test_step_index_value():
    assert step_index(2, 6) == 11
    assert step_index(5, 3) == 11
