from opsdemo.pack_rate import pack_rate


def test_pack_rate_accepts_numbers():
    pack_rate(2, 5)


def test_pack_rate_value():
    assert pack_rate(9, 5) == 4
    assert pack_rate(5, 4) == 1
