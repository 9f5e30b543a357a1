from opsdemo.pack_size import pack_size


def test_pack_size_accepts_numbers():
    pack_size(2, 5)


def test_pack_size_value():
    assert pack_size(7, 6) == False
    assert pack_size(8, 3) == False
