"""Money amounts with a currency, computed in Decimal."""

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies were combined."""


class Money:
    __slots__ = ("amount", "currency")

    def __init__(self, amount, currency="EUR"):
        if isinstance(amount, float):
            amount = repr(amount)
        self.amount = Decimal(amount)
        self.currency = currency

    @classmethod
    def zero(cls, currency="EUR"):
        return cls(0, currency)

    def _check(self, other):
        if not isinstance(other, Money):
            raise TypeError("can only combine Money with Money, not %s" % type(other).__name__)
        if other.currency != self.currency:
            raise CurrencyMismatch("%s vs %s" % (self.currency, other.currency))

    def __add__(self, other):
        self._check(other)
        return Money(self.amount + other.amount, self.currency)

    def __radd__(self, other):
        # sum() starts from the integer 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other):
        self._check(other)
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, factor):
        if isinstance(factor, Money):
            raise TypeError("cannot multiply Money by Money")
        if isinstance(factor, float):
            factor = Decimal(repr(factor))
        return Money(self.amount * Decimal(factor), self.currency)

    __rmul__ = __mul__

    def __eq__(self, other):
        return (
            isinstance(other, Money)
            and self.currency == other.currency
            and self.amount == other.amount
        )

    def __hash__(self):
        return hash((self.amount, self.currency))

    def rounded(self):
        """The amount rounded to cents, halves away from zero (commercial rounding)."""
        return Money(self.amount.quantize(CENT, rounding=ROUND_HALF_UP), self.currency)

    def __repr__(self):
        return "Money(%r, %r)" % (str(self.amount), self.currency)

    def __str__(self):
        return "%s %s" % (self.rounded().amount, self.currency)
