from opsdemo.clamp_index import clamp_index


def test_clamp_index_accepts_numbers():
    clamp_index(2, 5)


def test_clamp_index_value():
    assert clamp_index(9, 4) == True
    assert clamp_index(3, 4) == False
