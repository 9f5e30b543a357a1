from decimal import Decimal

from invoicer import Money, TaxTable


def test_default_rate_for_unknown_category():
    t = TaxTable("0.20", {"food": "0.05"})
    assert t.rate_for("tools") == Decimal("0.20")


def test_category_rate():
    t = TaxTable("0.20", {"food": "0.05"})
    assert t.tax_on(Money("10.00"), "food") == Money("0.50")


def test_with_rate_does_not_modify_original():
    t = TaxTable("0.20")
    t2 = t.with_rate("books", "0.07")
    assert "books" not in t.rates
    assert t2.rate_for("books") == Decimal("0.07")
