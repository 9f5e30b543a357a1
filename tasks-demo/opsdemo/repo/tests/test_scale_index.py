from opsdemo.scale_index import scale_index


def test_scale_index_accepts_numbers():
    scale_index(2, 5)


def test_scale_index_value():
    assert scale_index(5, 4) == True
    assert scale_index(1, 7) == False
