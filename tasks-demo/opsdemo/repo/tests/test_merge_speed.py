from opsdemo.merge_speed import merge_speed


def test_merge_speed_accepts_numbers():
    merge_speed(2, 5)


def test_merge_speed_value():
    assert merge_speed(7, 1) == 15
    assert merge_speed(5, 5) == 17
