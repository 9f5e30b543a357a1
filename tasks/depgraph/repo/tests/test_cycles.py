from depgraph import CycleError, Graph, find_cycle


def test_acyclic():
    assert find_cycle(Graph({"a": ["b"], "b": ["c"]})) is None


def test_cycle_is_reported_closed():
    assert find_cycle(Graph({"a": ["b"], "b": ["c"], "c": ["a"]})) == ["a", "b", "c", "a"]


def test_self_loop():
    assert find_cycle(Graph({"a": ["a"]})) == ["a", "a"]


def test_error_message():
    err = CycleError(["a", "b", "a"])
    assert str(err) == "dependency cycle: a -> b -> a" and err.cycle == ["a", "b", "a"]


def test_shared_dependency_is_not_a_cycle():
    diamond = Graph({"app": ["cli", "lib"], "cli": ["core"], "lib": ["core"]})
    assert find_cycle(diamond) is None


def test_cycle_behind_a_shared_dependency():
    g = Graph({"app": ["cli", "lib"], "cli": ["core"], "lib": ["core", "plugins"],
               "plugins": ["lib"]})
    assert find_cycle(g) == ["lib", "plugins", "lib"]
