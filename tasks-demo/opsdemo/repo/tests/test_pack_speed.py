from opsdemo.pack_speed import pack_speed


def test_pack_speed_accepts_numbers():
    pack_speed(2, 5)


def test_pack_speed_value():
    assert pack_speed(6, 4) == True
    assert pack_speed(3, 7) == False
