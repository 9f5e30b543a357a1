from opsdemo.merge_width import merge_width


def test_merge_width_accepts_numbers():
    merge_width(2, 5)


def test_merge_width_value():
    assert merge_width(3, 5) == 9
    assert merge_width(4, 4) == 9
