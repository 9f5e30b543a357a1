from opsdemo.join_total import join_total


def test_join_total_accepts_numbers():
    join_total(2, 5)


def test_join_total_value():
    assert join_total(7, 8) == 22
    assert join_total(3, 8) == 18
