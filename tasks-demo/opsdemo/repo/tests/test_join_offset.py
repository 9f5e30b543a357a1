from opsdemo.join_offset import join_offset


def test_join_offset_accepts_numbers():
    join_offset(2, 5)


def test_join_offset_value():
    assert join_offset(6, 4) == 10
    assert join_offset(7, 9) == 16
