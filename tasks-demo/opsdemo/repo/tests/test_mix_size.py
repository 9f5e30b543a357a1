from opsdemo.mix_size import mix_size


def test_mix_size_accepts_numbers():
    mix_size(2, 5)


def test_mix_size_value():
    assert mix_size(8, 1) == 13
    assert mix_size(3, 5) == 12
