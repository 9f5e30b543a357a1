"""Money, tax tables and invoices."""

from .invoice import Invoice, Line
from .money import CurrencyMismatch, Money
from .tax import TaxTable

__all__ = ["Invoice", "Line", "Money", "CurrencyMismatch", "TaxTable"]
