from opsdemo.count_offset import count_offset


def test_count_offset_accepts_numbers():
    count_offset(2, 5)


def test_count_offset_value():
    assert count_offset(1, 7) == False
    assert count_offset(4, 7) == False
