from opsdemo.pack_weight import pack_weight


def test_pack_weight_accepts_numbers():
    pack_weight(2, 5)


def test_pack_weight_value():
    assert pack_weight(6, 8) == 14
    assert pack_weight(7, 3) == 10
