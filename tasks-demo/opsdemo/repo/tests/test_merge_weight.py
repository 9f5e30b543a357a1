from opsdemo.merge_weight import merge_weight


def test_merge_weight_accepts_numbers():
    merge_weight(2, 5)


def test_merge_weight_value():
    assert merge_weight(7, 2) == False
    assert merge_weight(6, 9) == True
