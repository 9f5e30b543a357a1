from opsdemo.join_width import join_width


def test_join_width_accepts_numbers():
    join_width(2, 5)


def test_join_width_value():
    assert join_width(7, 8) == False
    assert join_width(2, 8) == False
