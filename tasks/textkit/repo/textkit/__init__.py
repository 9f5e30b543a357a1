"""Small text utilities."""

from .case import camel_to_snake, snake_to_camel
from .slugify import slugify
from .wrap import fill, wrap

__all__ = ["camel_to_snake", "snake_to_camel", "slugify", "fill", "wrap"]
__version__ = "0.3.0"
