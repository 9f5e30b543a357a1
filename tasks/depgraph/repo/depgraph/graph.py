"""The graph: each node maps to the nodes it depends on."""


class Graph:
    """Nodes and their dependencies; a dependency named but never added is a node too."""

    def __init__(self, dependencies=None):
        self._deps = {}
        for node, deps in (dependencies or {}).items():
            self.add(node, *deps)

    def add(self, node, *deps):
        """Add ``node`` (if new) and make it depend on ``deps``."""
        self._deps.setdefault(node, set()).update(deps)
        for dep in deps:
            self._deps.setdefault(dep, set())

    def remove(self, node):
        """Remove ``node`` and every edge to it."""
        del self._deps[node]
        for deps in self._deps.values():
            deps.discard(node)

    def nodes(self):
        return sorted(self._deps)

    def dependencies(self, node):
        return sorted(self._deps[node])

    def dependents(self, node):
        """The nodes that depend on ``node`` directly."""
        return sorted(n for n, deps in self._deps.items() if node in deps)

    def __contains__(self, node):
        return node in self._deps

    def __len__(self):
        return len(self._deps)

    def edges(self):
        return sorted((n, d) for n, deps in self._deps.items() for d in deps)

    def copy(self):
        return Graph({n: set(deps) for n, deps in self._deps.items()})
