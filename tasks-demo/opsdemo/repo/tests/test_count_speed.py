from opsdemo.count_speed import count_speed


def test_count_speed_accepts_numbers():
    count_speed(2, 5)


def test_count_speed_value():
    assert count_speed(7, 8) == True
    assert count_speed(8, 1) == False
