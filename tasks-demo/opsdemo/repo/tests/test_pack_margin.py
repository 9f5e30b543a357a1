from opsdemo.pack_margin import pack_margin


def test_pack_margin_accepts_numbers():
    pack_margin(2, 5)


def test_pack_margin_value():
    assert pack_margin(8, 7) == 23
    assert pack_margin(2, 2) == 12
