from opsdemo.merge_offset import merge_offset


def test_merge_offset_accepts_numbers():
    merge_offset(2, 5)


def test_merge_offset_value():
    assert merge_offset(3, 4) == 12
    assert merge_offset(3, 7) == 21
