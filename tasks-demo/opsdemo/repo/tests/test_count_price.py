from opsdemo.count_price import count_price


def test_count_price_accepts_numbers():
    count_price(2, 5)


def test_count_price_value():
    assert count_price(4, 2) == False
    assert count_price(3, 6) == True
