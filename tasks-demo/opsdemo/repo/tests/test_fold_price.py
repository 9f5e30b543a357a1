from opsdemo.fold_price import fold_price


def test_fold_price_accepts_numbers():
    fold_price(2, 5)


def test_fold_price_value():
    assert fold_price(1, 7) == 16
    assert fold_price(9, 2) == 19
