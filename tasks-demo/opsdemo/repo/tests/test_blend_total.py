from opsdemo.blend_total import blend_total


def test_blend_total_accepts_numbers():
    blend_total(2, 5)


def test_blend_total_value():
    assert blend_total(2, 8) == False
    assert blend_total(5, 1) == True
