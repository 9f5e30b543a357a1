from depgraph import Graph


def test_dependencies_become_nodes():
    g = Graph({"app": ["lib"]})
    assert g.nodes() == ["app", "lib"]
    assert g.dependencies("app") == ["lib"] and g.dependencies("lib") == []


def test_dependents():
    g = Graph({"a": ["c"], "b": ["c"]})
    assert g.dependents("c") == ["a", "b"]


def test_remove_drops_edges():
    g = Graph({"a": ["b"], "b": ["c"]})
    g.remove("b")
    assert g.nodes() == ["a", "c"] and g.edges() == []


def test_copy_is_independent():
    g = Graph({"a": ["b"]})
    h = g.copy()
    h.add("a", "c")
    assert g.dependencies("a") == ["b"]
