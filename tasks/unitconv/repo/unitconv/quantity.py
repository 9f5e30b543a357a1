"""A value with a unit."""

from decimal import ROUND_HALF_UP, Decimal

from .units import IncompatibleUnits, convert, get_unit


class Quantity:
    __slots__ = ("value", "unit")

    def __init__(self, value, unit):
        self.value = value
        self.unit = get_unit(unit)

    def to(self, unit):
        unit = get_unit(unit)
        return Quantity(convert(self.value, self.unit, unit), unit)

    def __add__(self, other):
        if not isinstance(other, Quantity):
            return NotImplemented
        if self.unit.dimension == "temperature":
            # 20 °C + 10 °C is ambiguous (points vs differences): refuse it
            raise IncompatibleUnits("temperatures cannot be added")
        return Quantity(self.value + other.to(self.unit).value, self.unit)

    def __eq__(self, other):
        if not isinstance(other, Quantity) or other.unit.dimension != self.unit.dimension:
            return NotImplemented
        return self.unit.to_base(self.value) == other.unit.to_base(other.value)

    def __lt__(self, other):
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.value < other.to(self.unit).value

    def format(self, precision=None):
        """``'3.11 mi'``; ``precision`` digits after the point, halves rounded away from zero."""
        if precision is None:
            number = repr(self.value)
        else:
            # the shortest repr of the float is what the user wrote ('2.675', not 2.67499...)
            exact = Decimal(repr(self.value))
            number = str(exact.quantize(Decimal(1).scaleb(-precision), rounding=ROUND_HALF_UP))
        return "%s %s" % (number, self.unit.symbol)

    def __str__(self):
        return self.format()

    def __repr__(self):
        return "Quantity(%r, %r)" % (self.value, self.unit.symbol)
