"""Quantities with units: parsing, conversion, formatting."""

from .parse import parse_quantity
from .quantity import Quantity
from .units import IncompatibleUnits, Unit, UnknownUnit, get_unit

__all__ = ["IncompatibleUnits", "Quantity", "Unit", "UnknownUnit", "get_unit", "parse_quantity"]
__version__ = "2.0.3"
