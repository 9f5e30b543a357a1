"""Reading .env files."""

from .interpolate import interpolate
from .lexer import EnvSyntaxError, parse_lines
from .loader import load, load_into, loads

__all__ = ["EnvSyntaxError", "interpolate", "load", "load_into", "loads", "parse_lines"]
__version__ = "0.7.2"
