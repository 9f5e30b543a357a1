from opsdemo.clamp_size import clamp_size


def test_clamp_size_accepts_numbers():
    clamp_size(2, 5)


def test_clamp_size_value():
    assert clamp_size(5, 4) == 1
    assert clamp_size(4, 4) == 0
