from opsdemo.merge_limit import merge_limit


def test_merge_limit_accepts_numbers():
    merge_limit(2, 5)


def test_merge_limit_value():
    assert merge_limit(7, 8) == 15
    assert merge_limit(7, 5) == 12
