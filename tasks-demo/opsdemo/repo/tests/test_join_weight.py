from opsdemo.join_weight import join_weight


def test_join_weight_accepts_numbers():
    join_weight(2, 5)


def test_join_weight_value():
    assert join_weight(3, 9) == 27
    assert join_weight(9, 4) == 36
