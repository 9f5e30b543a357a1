import pytest

from depgraph import CycleError, Graph, levels, toposort


def test_dependencies_first():
    g = Graph({"app": ["lib", "utils"], "lib": ["utils"]})
    assert toposort(g) == ["utils", "lib", "app"]


def test_ties_broken_by_name():
    g = Graph({"b": [], "a": [], "c": ["a", "b"]})
    assert toposort(g) == ["a", "b", "c"]


def test_levels():
    g = Graph({"app": ["lib", "cli"], "lib": ["core"], "cli": ["core"]})
    assert levels(g) == [["core"], ["cli", "lib"], ["app"]]


def test_empty_graph():
    assert toposort(Graph()) == [] and levels(Graph()) == []


def test_cycle_raises_with_the_cycle():
    g = Graph({"a": ["b"], "b": ["c"], "c": ["a"], "d": []})
    with pytest.raises(CycleError) as info:
        toposort(g)
    assert info.value.cycle == ["a", "b", "c", "a"]


def test_graph_is_unchanged_by_sorting():
    g = Graph({"app": ["lib"], "lib": ["core"]})
    assert toposort(g) == ["core", "lib", "app"]
    assert toposort(g) == ["core", "lib", "app"]
    assert g.edges() == [("app", "lib"), ("lib", "core")]
