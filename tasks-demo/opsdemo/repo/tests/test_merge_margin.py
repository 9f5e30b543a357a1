from opsdemo.merge_margin import merge_margin


def test_merge_margin_accepts_numbers():
    merge_margin(2, 5)


def test_merge_margin_value():
    assert merge_margin(7, 5) == False
    assert merge_margin(6, 1) == False
