from opsdemo.merge_level import merge_level


def test_merge_level_accepts_numbers():
    merge_level(2, 5)


def test_merge_level_value():
    assert merge_level(5, 7) == -2
    assert merge_level(3, 8) == -5
