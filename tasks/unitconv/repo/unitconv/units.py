"""The unit registry.

A unit converts to the base unit of its dimension as ``base = value * factor + offset``; only
temperatures have an offset.
"""

import unicodedata


class UnknownUnit(KeyError):
    """No unit has this symbol or name."""

    def __str__(self):
        return "unknown unit %r" % self.args[0]


class IncompatibleUnits(ValueError):
    """The units measure different dimensions."""


class Unit:
    def __init__(self, symbol, dimension, factor, offset=0.0, names=()):
        self.symbol = symbol
        self.dimension = dimension
        self.factor = factor
        self.offset = offset
        self.names = names

    def to_base(self, value):
        return value * self.factor + self.offset

    def from_base(self, value):
        return (value - self.offset) / self.factor

    def __repr__(self):
        return "Unit(%r)" % self.symbol


_UNITS = [
    Unit("m", "length", 1.0, names=("meter", "metre", "meters", "metres")),
    Unit("km", "length", 1000.0, names=("kilometer", "kilometers")),
    Unit("cm", "length", 0.01, names=("centimeter", "centimeters")),
    Unit("mm", "length", 0.001, names=("millimeter", "millimeters")),
    Unit("μm", "length", 1e-6, names=("micrometer", "micron", "um")),
    Unit("in", "length", 0.0254, names=("inch", "inches")),
    Unit("ft", "length", 0.3048, names=("foot", "feet")),
    Unit("mi", "length", 1609.344, names=("mile", "miles")),
    Unit("kg", "mass", 1.0, names=("kilogram", "kilograms")),
    Unit("g", "mass", 0.001, names=("gram", "grams")),
    Unit("mg", "mass", 1e-6, names=("milligram", "milligrams")),
    Unit("μg", "mass", 1e-9, names=("microgram", "ug")),
    Unit("lb", "mass", 0.45359237, names=("pound", "pounds")),
    Unit("s", "time", 1.0, names=("second", "seconds", "sec")),
    Unit("min", "time", 60.0, names=("minute", "minutes")),
    Unit("h", "time", 3600.0, names=("hour", "hours")),
    Unit("μs", "time", 1e-6, names=("microsecond", "us")),
    Unit("K", "temperature", 1.0, names=("kelvin",)),
    Unit("°C", "temperature", 1.0, 273.15, names=("celsius", "degC")),
    Unit("°F", "temperature", 5 / 9, 273.15 - 32 * 5 / 9, names=("fahrenheit", "degF")),
]

_BY_NAME = {}
for _unit in _UNITS:
    for _key in (_unit.symbol,) + _unit.names:
        _BY_NAME[_key] = _unit


def get_unit(name):
    """The unit with this symbol or name (``'km'``, ``'kilometers'``)."""
    if isinstance(name, Unit):
        return name
    key = unicodedata.normalize("NFKC", name.strip())
    try:
        return _BY_NAME[key]
    except KeyError:
        pass
    try:
        return _BY_NAME[key.lower()]
    except KeyError:
        raise UnknownUnit(name) from None


def convert(value, source, target):
    source, target = get_unit(source), get_unit(target)
    if source.dimension != target.dimension:
        raise IncompatibleUnits("cannot convert %s (%s) to %s (%s)" % (
            source.symbol, source.dimension, target.symbol, target.dimension))
    if source is target:
        return value
    return target.from_base(source.to_base(value))
