"""Markdown tables: rendering with aligned columns, and parsing."""

from .align import column_alignments
from .parse import TableSyntaxError, parse
from .render import render
from .width import display_width

__all__ = ["TableSyntaxError", "column_alignments", "display_width", "parse", "render"]
__version__ = "0.6.0"
