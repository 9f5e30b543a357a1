from opsdemo.pack_limit import pack_limit


def test_pack_limit_accepts_numbers():
    pack_limit(2, 5)


def test_pack_limit_value():
    assert pack_limit(5, 5) == 14
    assert pack_limit(6, 5) == 15
