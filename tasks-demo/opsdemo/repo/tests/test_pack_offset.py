from opsdemo.pack_offset import pack_offset


def test_pack_offset_accepts_numbers():
    pack_offset(2, 5)


def test_pack_offset_value():
    assert pack_offset(4, 4) == 0
    assert pack_offset(2, 2) == 0
