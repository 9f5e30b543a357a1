from opsdemo.blend_size import blend_size


def test_blend_size_accepts_numbers():
    blend_size(2, 5)


def test_blend_size_value():
    assert blend_size(4, 1) == 5
    assert blend_size(1, 1) == 2
