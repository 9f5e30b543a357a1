from decimal import Decimal

import pytest

from invoicer import CurrencyMismatch, Money


def test_addition():
    assert Money("1.10") + Money("2.20") == Money("3.30")


def test_currency_mismatch():
    with pytest.raises(CurrencyMismatch):
        Money(1, "EUR") + Money(1, "USD")


def test_multiplication_by_quantity():
    assert Money("0.10") * 3 == Money("0.30")
    assert 2 * Money("1.25") == Money("2.50")


def test_float_input_is_exact():
    assert Money(0.1).amount == Decimal("0.1")


def test_rounding_simple():
    assert Money("1.234").rounded() == Money("1.23")


def test_rounding_half_up():
    assert Money("2.675").rounded() == Money("2.68")
    assert Money("0.125").rounded() == Money("0.13")
    assert Money("-0.125").rounded() == Money("-0.13")


def test_str_uses_commercial_rounding():
    assert str(Money("1.005")) == "1.01 EUR"
