from opsdemo.split_speed import split_speed


def test_split_speed_accepts_numbers():
    split_speed(2, 5)


def test_split_speed_value():
    assert split_speed(7, 7) == 49
    assert split_speed(6, 8) == 48
