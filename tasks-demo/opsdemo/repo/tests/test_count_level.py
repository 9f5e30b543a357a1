from opsdemo.count_level import count_level


def test_count_level_accepts_numbers():
    count_level(2, 5)


def test_count_level_value():
    assert count_level(5, 9) == 45
    assert count_level(4, 7) == 28
