"""Topological order: dependencies before the nodes that need them."""

from .cycles import CycleError, find_cycle


def _pending_counts(graph):
    return {node: len(graph.dependencies(node)) for node in graph.nodes()}


def levels(graph):
    """Groups of nodes that can be built in parallel, in build order (each group sorted)."""
    pending = _pending_counts(graph)
    ready = sorted(node for node, count in pending.items() if count == 0)
    result = []
    while ready:
        result.append(ready)
        next_ready = []
        for node in ready:
            for dependent in graph.dependents(node):
                pending[dependent] -= 1
                if pending[dependent] == 0:
                    next_ready.append(dependent)
        ready = sorted(next_ready)
    if sum(len(level) for level in result) != len(graph):
        raise CycleError(find_cycle(graph))
    return result


def toposort(graph):
    """Every node once, each after all of its dependencies; ties broken by name."""
    return [node for level in levels(graph) for node in level]
