"""Label spaces: output columns, upward closure through a graph, unknown labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlattack.data import make_label_space, resolve_graph
from mlattack.graph import LabelGraph


@pytest.fixture
def graph() -> LabelGraph:
    # animal -> mammal -> dog, animal -> bird; vehicle -> car
    return LabelGraph(
        ["animal", "mammal", "dog", "bird", "vehicle", "car"],
        [("animal", "mammal"), ("mammal", "dog"), ("animal", "bird"), ("vehicle", "car")],
    )


def test_annotations_turn_on_all_ancestors(graph: LabelGraph) -> None:
    space = make_label_space(["dog", "car"], graph=graph)
    labels = space.encode([[space.index("dog", source="t")], [space.index("car", source="t")], []])
    expected = torch.tensor(
        [[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.float32
    )
    assert space.names == graph.names
    assert torch.equal(labels, expected)
    assert not graph.violations(labels.bool().numpy()).any()


def test_label_names_select_columns_and_contract_the_graph(graph: LabelGraph) -> None:
    space = make_label_space([], label_names=["dog", "animal"], graph=graph)
    labels = space.encode([[space.index("dog", source="t")], [space.index("bird", source="t")]])
    assert space.names == ("dog", "animal")
    # bird is outside the columns but still turns on its ancestor "animal"
    assert labels.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    assert space.graph is not None and space.graph.names == ("dog", "animal")
    assert space.graph.edges.tolist() == [[1, 0]]


def test_unknown_labels_are_named(graph: LabelGraph) -> None:
    space = make_label_space([], graph=graph)
    with pytest.raises(ValueError, match=r"'horse' in file\.xml is not in the label graph"):
        space.index("horse", source="file.xml")
    with pytest.raises(ValueError, match="horse"):
        make_label_space([], label_names=["dog", "horse"], graph=graph)
    with pytest.raises(ValueError, match="duplicates"):
        make_label_space(["a"], label_names=["a", "a"])


def test_without_graph_names_are_the_native_classes_plus_requested() -> None:
    space = make_label_space(["b", "a"])
    assert space.names == ("b", "a") and space.graph is None
    assert space.encode_matrix(np.array([[1, 0], [1, 1]])).tolist() == [[1.0, 0.0], [1.0, 1.0]]
    subset = make_label_space(["a", "b", "c"], label_names=["c"])
    assert subset.encode(
        [[subset.index("a", source="t")], [subset.index("c", source="t")]]
    ).tolist() == [[0.0], [1.0]]


def test_resolve_graph_from_builtin_and_file(graph: LabelGraph, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "g.json"
    graph.save(path)
    assert resolve_graph(str(path)) == graph
    assert resolve_graph(None) is None
    assert "dog" in resolve_graph("builtin:voc").names  # type: ignore[union-attr]
    with pytest.raises(FileNotFoundError, match="nope.json"):
        resolve_graph(tmp_path / "nope.json")
    with pytest.raises(TypeError, match="LabelGraph"):
        resolve_graph(3)  # type: ignore[arg-type]
