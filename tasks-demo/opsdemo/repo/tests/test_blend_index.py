from opsdemo.blend_index import blend_index


def test_blend_index_accepts_numbers():
    blend_index(2, 5)


def test_blend_index_value():
    assert blend_index(7, 4) == 16
    assert blend_index(5, 8) == 18
