from opsdemo.join_margin import join_margin


def test_join_margin_accepts_numbers():
    join_margin(2, 5)


def test_join_margin_value():
    assert join_margin(8, 3) == True
    assert join_margin(5, 9) == False
