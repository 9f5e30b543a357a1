"""Invoices: lines, discount, tax, total."""

from decimal import Decimal

from .money import Money


class Line:
    def __init__(self, description, unit_price, quantity=1, category="default"):
        if quantity <= 0:
            raise ValueError("quantity must be positive, got %r" % (quantity,))
        self.description = description
        self.unit_price = unit_price
        self.quantity = quantity
        self.category = category

    @property
    def net(self):
        return self.unit_price * self.quantity


class Invoice:
    def __init__(self, tax_table, currency="EUR", discount=0):
        self.tax_table = tax_table
        self.currency = currency
        self.discount = Decimal(str(discount))
        self.lines = []

    def add(self, line):
        if line.unit_price.currency != self.currency:
            raise ValueError("line in %s on an invoice in %s" % (line.unit_price.currency, self.currency))
        self.lines.append(line)
        return self

    def subtotal(self):
        return sum(l.net for l in self.lines)

    def tax(self):
        factor = 1 - self.discount
        return sum(self.tax_table.tax_on(l.net * factor, l.category) for l in self.lines)

    def total(self):
        """Subtotal after discount plus tax, rounded to cents."""
        return (self.subtotal() * (1 - self.discount) + self.tax()).rounded()
