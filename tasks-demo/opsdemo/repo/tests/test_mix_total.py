from opsdemo.mix_total import mix_total


def test_mix_total_accepts_numbers():
    mix_total(2, 5)


def test_mix_total_value():
    assert mix_total(7, 6) == True
    assert mix_total(6, 8) == False
