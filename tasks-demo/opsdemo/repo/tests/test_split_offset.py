from opsdemo.split_offset import split_offset


def test_split_offset_accepts_numbers():
    split_offset(2, 5)


def test_split_offset_value():
    assert split_offset(9, 6) == 15
    assert split_offset(8, 9) == 17
