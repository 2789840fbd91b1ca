"""LabelGraph construction, validation, structure queries, JSON round trip and subgraphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlattack.graph import JSON_SCHEMA, LabelGraph

# animal -> {dog, cat}; pet -> {dog, cat} (multi-parent); vehicle -> car; plant (isolated)
NAMES = ["animal", "dog", "cat", "vehicle", "car", "pet", "plant"]
EDGES = [("animal", "dog"), ("animal", "cat"), ("vehicle", "car"), ("pet", "dog"), ("pet", "cat")]


@pytest.fixture
def graph() -> LabelGraph:
    return LabelGraph(NAMES, EDGES)


def test_basic_structure(graph: LabelGraph) -> None:
    assert len(graph) == 7
    assert graph.names == tuple(NAMES)
    assert graph.index("car") == 4
    assert graph.edges.dtype == np.int64 and graph.edges.shape == (5, 2)
    assert {(graph.names[p], graph.names[c]) for p, c in graph.edges.tolist()} == set(EDGES)
    assert graph.parents("dog").tolist() == [0, 5]
    assert graph.parents(1).tolist() == [0, 5]
    assert graph.children("pet").tolist() == [1, 2]
    assert graph.children("car").tolist() == []
    assert graph.roots.tolist() == [0, 3, 5, 6]
    assert graph.leaves.tolist() == [1, 2, 4, 6]
    assert graph.adjacency().toarray()[5, 1] == 1
    assert graph.adjacency().sum() == 5


def test_edges_by_index_and_duplicates_tolerated() -> None:
    by_name = LabelGraph(NAMES, EDGES)
    by_index = LabelGraph(NAMES, [(NAMES.index(p), NAMES.index(c)) for p, c in EDGES] * 2)
    assert by_index == by_name
    assert len(by_index.edges) == len(EDGES)


def test_ancestors_descendants_depth_on_chain_and_diamond() -> None:
    # a -> b -> c -> d  and a diamond a -> x -> d, so the longest path to d has length 3
    g = LabelGraph(
        ["a", "b", "c", "d", "x"], [("a", "b"), ("b", "c"), ("c", "d"), ("a", "x"), ("x", "d")]
    )
    assert g.ancestors("d").tolist() == [0, 1, 2, 4]
    assert g.descendants("a").tolist() == [1, 2, 3, 4]
    assert g.descendants("d").tolist() == []
    assert g.ancestors("a").tolist() == []
    assert [g.depth(name) for name in "abcdx"] == [0, 1, 2, 3, 1]
    assert g.depths.tolist() == [0, 1, 2, 3, 1]


def test_empty_graph_and_no_edges() -> None:
    g = LabelGraph([])
    assert len(g) == 0 and g.roots.size == 0 and g.edges.shape == (0, 2)
    flat = LabelGraph(["a", "b"])
    assert flat.roots.tolist() == [0, 1] == flat.leaves.tolist()


@pytest.mark.parametrize(
    ("names", "edges", "message"),
    [
        (["a", "b", "a"], [], "duplicate label name 'a'"),
        (["a", "b"], [("a", "zebra")], "unknown label 'zebra'"),
        (["a", "b"], [(0, 2)], "label index 2 out of range"),
        (["a", "b"], [(-1, 0)], "label index -1 out of range"),
        (["a", "b"], [("b", "b")], "self-loop on label 'b'"),
        (["a", ""], [], "empty"),
        (["a", "b"], [("a", "b", "a")], "not a (parent, child) pair"),
        (["a", "b"], ["ab"], "edge 'ab' is not a (parent, child) pair"),
        (["a", "b"], [3], "edge 3 is not a (parent, child) pair"),
    ],
)
def test_construction_errors(names: list[str], edges: list, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LabelGraph(names, edges)


def test_cycle_is_named() -> None:
    names = ["root", "a", "b", "c", "side"]
    edges = [("root", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("root", "side")]
    with pytest.raises(ValueError, match="cycle") as error:
        LabelGraph(names, edges)
    message = str(error.value)
    assert all(f"'{name}'" in message for name in "abc")
    assert "'root'" not in message and "'side'" not in message
    # printed in edge direction, closed: 'a' -> 'b' -> 'c' -> 'a' up to rotation
    cycle = message.split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1]
    ring = [name.strip("'") for name in cycle[:-1]]
    assert ring in (["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"])


def test_two_node_cycle() -> None:
    with pytest.raises(ValueError, match="cycle: '(x' -> 'y' -> 'x|y' -> 'x' -> 'y)'"):
        LabelGraph(["x", "y"], [("x", "y"), ("y", "x")])


def test_type_errors() -> None:
    with pytest.raises(TypeError):
        LabelGraph("abc")
    with pytest.raises(TypeError):
        LabelGraph(["a", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        LabelGraph(["a", "b"], [("a", 1.0)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="edges"):
        LabelGraph(["a", "b"], None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metadata must be a mapping"):
        LabelGraph(["a", "b"], metadata=[("source", "x")])  # type: ignore[arg-type]


def test_query_errors(graph: LabelGraph) -> None:
    with pytest.raises(ValueError, match="unknown label 'zebra'"):
        graph.index("zebra")
    with pytest.raises(ValueError, match="unknown label 'zebra'"):
        graph.parents("zebra")
    with pytest.raises(ValueError, match="label index 7 out of range"):
        graph.children(7)
    with pytest.raises(ValueError, match="label index 99 out of range"):
        graph.depth(99)
    with pytest.raises(ValueError, match="unknown label 'zebra'"):
        graph.ancestors("zebra")


def test_structure_arrays_are_not_shared_mutable_state(graph: LabelGraph) -> None:
    parents = graph.parents("dog")
    parents[:] = 6
    assert graph.parents("dog").tolist() == [0, 5]
    with pytest.raises(ValueError):
        graph.edges[0, 0] = 3


def test_json_round_trip(graph: LabelGraph, tmp_path: Path) -> None:
    graph.metadata["source"] = "hand-made"
    graph.metadata["synsets"] = {"dog": "dog.n.01"}
    data = graph.to_json()
    assert data["schema"] == JSON_SCHEMA and data["version"] == 1
    assert json.loads(json.dumps(data)) == data
    again = LabelGraph.from_json(data)
    assert again == graph
    assert again.metadata == graph.metadata
    path = tmp_path / "g.json"
    graph.save(path)
    loaded = LabelGraph.load(path)
    assert loaded == graph and loaded.metadata == graph.metadata
    assert loaded.parents("dog").tolist() == graph.parents("dog").tolist()


def test_from_json_accepts_index_edges() -> None:
    data = {"schema": JSON_SCHEMA, "version": 1, "names": ["a", "b"], "edges": [[0, 1]]}
    assert LabelGraph.from_json(data).children("a").tolist() == [1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "other"}, "key 'schema'"),
        ({"version": 2}, "version 2"),
        ({"version": True}, "version True"),
        ({"names": "ab"}, "key 'names'"),
        ({"edges": [["a"]]}, "key 'edges'"),
        ({"metadata": []}, "key 'metadata'"),
        ({"edges": [["a", "zebra"]]}, "unknown label 'zebra'"),
    ],
)
def test_from_json_errors(change: dict, message: str) -> None:
    data = {"schema": JSON_SCHEMA, "version": 1, "names": ["a", "b"], "edges": [["a", "b"]]}
    data.update(change)
    with pytest.raises(ValueError, match=message):
        LabelGraph.from_json(data)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match="missing.json"):
        LabelGraph.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        LabelGraph.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema": "nope"}))
    with pytest.raises(ValueError, match="wrong.json.*schema"):
        LabelGraph.load(wrong)
    with pytest.raises(ValueError, match="cannot be read"):
        LabelGraph.load(tmp_path)  # a directory
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="binary.json"):
        LabelGraph.load(binary)


def test_subgraph_contracts_removed_labels() -> None:
    # a -> b -> c -> d, a -> e; keep d, a, e (in that order): a -> d through b, c
    g = LabelGraph(
        ["a", "b", "c", "d", "e"],
        [("a", "b"), ("b", "c"), ("c", "d"), ("a", "e")],
        metadata={"synsets": {n: f"{n}.n.01" for n in "abcde"}, "source": "x"},
    )
    sub = g.subgraph(["d", "a", "e"])
    assert sub.names == ("d", "a", "e")
    assert {(sub.names[p], sub.names[c]) for p, c in sub.edges.tolist()} == {("a", "d"), ("a", "e")}
    assert sub.metadata == {"synsets": {"d": "d.n.01", "a": "a.n.01", "e": "e.n.01"}, "source": "x"}


def test_subgraph_keeps_nearest_kept_ancestor_only() -> None:
    # a -> b -> c with all kept except nothing: kept {a, b, c} keeps both edges, no shortcut a -> c
    g = LabelGraph(["a", "b", "c"], [("a", "b"), ("b", "c")])
    assert g.subgraph(["a", "b", "c"]) == g
    assert g.subgraph([2, 0]).edges.tolist() == [[1, 0]]


def test_subgraph_multi_parent_through_removed_node() -> None:
    # p1 -> m, p2 -> m, m -> x; removing m gives x two parents
    g = LabelGraph(["p1", "p2", "m", "x"], [("p1", "m"), ("p2", "m"), ("m", "x")])
    sub = g.subgraph(["p1", "p2", "x"])
    assert sub.parents("x").tolist() == [0, 1]


def test_subgraph_errors(graph: LabelGraph) -> None:
    with pytest.raises(ValueError, match="repeat.*'dog'"):
        graph.subgraph(["dog", "cat", "dog"])
    with pytest.raises(ValueError, match="unknown label 'zebra'"):
        graph.subgraph(["zebra"])
    with pytest.raises(TypeError, match="single string"):
        graph.subgraph("dog")


def test_the_graph_module_knows_no_source() -> None:
    # Sources live in mlattack.graph_sources, which imports mlattack.graph, never the reverse.
    for shortcut in ("builtin", "from_openimages", "from_wordnet"):
        assert not hasattr(LabelGraph, shortcut)


@pytest.mark.parametrize(
    ("names", "edges", "error", "message"),
    [
        (None, [], TypeError, "names must be a sequence.*NoneType"),
        (0, [], TypeError, "names must be a sequence.*int"),
        (np.int64(3), [], TypeError, "names must be a sequence.*int64"),
        ({"a", "b"}, [], TypeError, "names must be a sequence.*set"),
        ({"a": 0}, [], TypeError, "names must be a sequence.*dict"),
        (np.array([["a"]]), [], TypeError, r"names must be a 1-D array.*\(1, 1\)"),
        (["a", "b"], 0, TypeError, "edges must be an iterable.*int"),
        (["a", "b"], {"a": "b"}, TypeError, "edges must be an iterable.*dict"),
        (["a", "b"], np.array([0, 1]), TypeError, "edges must be an iterable.*ndarray"),
        (["a", "b"], [frozenset({"a", "b"})], TypeError, "edge at position 0 is a set"),
        (["a", "b"], [{"parent": "a", "child": "b"}], TypeError, "position 0 is a mapping"),
        (["a", "b"], [{0: "a", 1: "b"}], TypeError, "position 0 is a mapping"),
        (["a", "b"], [("a", "b"), ("a", 1.5)], TypeError, "edge at position 1: .*1.5"),
        (["a", "b"], [(True, False)], TypeError, "edge at position 0: .*True"),
        (["a", "b"], [("a", "b"), ("a", "zebra")], ValueError, "position 1: unknown label"),
    ],
)
def test_bad_constructor_arguments_are_named(
    names: object, edges: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        LabelGraph(names, edges)  # type: ignore[arg-type]


def test_ordered_containers_and_numpy_values_are_accepted() -> None:
    names = np.array(["a", "b", "c"])
    edges = np.array([[0, 1], [1, 2]], dtype=np.int64)
    graph = LabelGraph(names, edges)
    assert graph.names == ("a", "b", "c") and graph.edges.tolist() == [[0, 1], [1, 2]]
    # a set of ordered pairs is fine: the pairs carry the order, and edges are sorted anyway
    assert LabelGraph(("a", "b", "c"), {("a", "b"), ("b", "c")}) == graph
    assert LabelGraph(["a", "b", "c"], ((np.int64(0), "b"), ["b", np.int32(2)])) == graph


def test_deep_json_and_metadata_name_the_problem(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"schema": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(ValueError, match="deep.json.*nested too deeply"):
        LabelGraph.load(deep)
    nested: dict = {}
    inner = nested
    for _ in range(5_000):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(ValueError, match=r"metadata\['deep'\] is nested too deeply"):
        LabelGraph(["a"], metadata={"deep": nested})
    graph = LabelGraph(["a"])
    graph.metadata["deep"] = nested  # set after construction: refused when written
    with pytest.raises(ValueError, match="metadata is nested too deeply"):
        graph.to_json()
    entry = {"schema": JSON_SCHEMA, "version": 1, "names": ["a", "b"], "edges": [["a", "b"], "ab"]}
    with pytest.raises(ValueError, match="key 'edges'.*entry 1 is 'ab'"):
        LabelGraph.from_json(entry)


@pytest.mark.parametrize(
    ("metadata", "error", "message"),
    [
        ({"synsets": {"a", "b"}}, TypeError, r"metadata\['synsets'\] is not JSON: .*set"),
        ({"weights": torch.ones(2)}, TypeError, r"metadata\['weights'\] is not JSON: .*Tensor"),
        ({1: "one"}, TypeError, "metadata keys must be strings, got 1"),
        ({"score": float("nan")}, ValueError, r"metadata\['score'\] is not JSON"),
    ],
)
def test_metadata_that_is_not_json_is_refused_at_construction(
    metadata: dict, error: type[Exception], message: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=message):
        LabelGraph(["a"], metadata=metadata)
    LabelGraph(["a"], metadata={"source": "x", "mids": {"a": "/m/1"}}).save(tmp_path / "g.json")
