from opsdemo.merge_total import merge_total


def test_merge_total_accepts_numbers():
    merge_total(2, 5)


def test_merge_total_value():
    assert merge_total(3, 8) == 11
    assert merge_total(3, 5) == 8
