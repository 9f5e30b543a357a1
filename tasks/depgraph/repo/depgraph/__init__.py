"""Dependency graphs: ordering and cycles."""

from .cycles import CycleError, find_cycle
from .graph import Graph
from .toposort import levels, toposort

__all__ = ["CycleError", "Graph", "find_cycle", "levels", "toposort"]
__version__ = "0.4.0"
