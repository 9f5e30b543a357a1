from opsdemo.join_speed import join_speed


def test_join_speed_accepts_numbers():
    join_speed(2, 5)


def test_join_speed_value():
    assert join_speed(4, 9) == False
    assert join_speed(9, 7) == True
