from opsdemo.pack_width import pack_width


def test_pack_width_accepts_numbers():
    pack_width(2, 5)


def test_pack_width_value():
    assert pack_width(3, 9) == -6
    assert pack_width(5, 2) == 3
