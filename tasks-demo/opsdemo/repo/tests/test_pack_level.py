from opsdemo.pack_level import pack_level


def test_pack_level_accepts_numbers():
    pack_level(2, 5)


def test_pack_level_value():
    assert pack_level(2, 9) == -7
    assert pack_level(6, 9) == -3
