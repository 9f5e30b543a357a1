from opsdemo.clamp_total import clamp_total


def test_clamp_total_accepts_numbers():
    clamp_total(2, 5)


def test_clamp_total_value():
    assert clamp_total(5, 3) == True
    assert clamp_total(7, 6) == True
