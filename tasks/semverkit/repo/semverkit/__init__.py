"""Semantic versions: parsing, precedence, ranges, bumping."""

from .bump import bump
from .errors import InvalidRange, InvalidVersion
from .ranges import Range, satisfies
from .version import Version

__all__ = ["InvalidRange", "InvalidVersion", "Range", "Version", "bump", "satisfies"]
__version__ = "0.8.1"
