"""INI-style configuration with typed values."""

from .lexer import Token, tokenize
from .parser import ParseError, loads
from .values import coerce, to_bool

__all__ = ["Token", "tokenize", "ParseError", "loads", "coerce", "to_bool"]
