"""Tax rates by product category."""

from decimal import Decimal


class TaxTable:
    """Maps product categories to tax rates; unknown categories get the default rate."""

    def __init__(self, default_rate, rates=None):
        self.default_rate = Decimal(str(default_rate))
        self.rates = {k: Decimal(str(v)) for k, v in (rates or {}).items()}

    def rate_for(self, category):
        if category in self.rates:
            return self.rates[category]
        return self.default_rate

    def tax_on(self, money, category):
        """Tax due on ``money`` (unrounded)."""
        return money * self.rate_for(category)

    def with_rate(self, category, rate):
        """A copy of this table with one more (or a changed) category."""
        rates = dict(self.rates)
        rates[category] = Decimal(str(rate))
        return TaxTable(self.default_rate, rates)
