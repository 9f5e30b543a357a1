from opsdemo.clamp_weight import clamp_weight


def test_clamp_weight_accepts_numbers():
    clamp_weight(2, 5)


def test_clamp_weight_value():
    assert clamp_weight(3, 1) == 7
    assert clamp_weight(1, 1) == 5
