from opsdemo.pack_total import pack_total


def test_pack_total_accepts_numbers():
    pack_total(2, 5)


def test_pack_total_value():
    assert pack_total(1, 7) == 9
    assert pack_total(4, 5) == 10
