from opsdemo.mix_offset import mix_offset


def test_mix_offset_accepts_numbers():
    mix_offset(2, 5)


def test_mix_offset_value():
    assert mix_offset(5, 5) == 25
    assert mix_offset(6, 2) == 12
