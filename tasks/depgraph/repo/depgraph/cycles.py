"""Cycle detection."""


class CycleError(ValueError):
    """The graph has a cycle; ``cycle`` lists its nodes, the first repeated at the end."""

    def __init__(self, cycle):
        super().__init__("dependency cycle: " + " -> ".join(map(str, cycle)))
        self.cycle = cycle


def find_cycle(graph):
    """A cycle of ``graph`` as ``[a, b, ..., a]``, or None. Deterministic (sorted traversal)."""
    state = {}  # node -> 'active' while on the DFS stack, 'done' after
    for start in graph.nodes():
        if start in state:
            continue
        stack = [(start, iter(graph.dependencies(start)))]
        path = [start]
        state[start] = "active"
        while stack:
            node, deps = stack[-1]
            for dep in deps:
                if state.get(dep) == "active":
                    return path[path.index(dep):] + [dep]
                if dep not in state:
                    state[dep] = "active"
                    path.append(dep)
                    stack.append((dep, iter(graph.dependencies(dep))))
                    break
            else:
                state[node] = "done"
                path.pop()
                stack.pop()
    return None
