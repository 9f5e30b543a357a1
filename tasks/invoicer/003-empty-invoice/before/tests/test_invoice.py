import pytest

from invoicer import Invoice, Line, Money, TaxTable


def table():
    return TaxTable("0.20", {"food": "0.05"})


def test_total_with_tax():
    inv = Invoice(table()).add(Line("hammer", Money("10.00"), 2))
    assert inv.total() == Money("24.00")


def test_discount_applies_before_tax():
    inv = Invoice(table(), discount="0.10").add(Line("hammer", Money("100.00")))
    assert inv.total() == Money("108.00")


def test_mixed_categories():
    inv = Invoice(table())
    inv.add(Line("bread", Money("2.00"), 3, "food")).add(Line("saw", Money("15.00")))
    assert inv.tax() == Money("3.30")


def test_line_quantity_positive():
    with pytest.raises(ValueError):
        Line("x", Money("1"), 0)


def test_currency_checked():
    with pytest.raises(ValueError):
        Invoice(table()).add(Line("x", Money("1", "USD")))
