"""The packaged VOC and NUS-WIDE WordNet graphs."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from mlattack.graph import LabelGraph
from mlattack.graph_sources.builtin import (
    BUILTIN_SPECS,
    available_builtin,
    build_builtin,
    load_builtin,
)
from mlattack.graph_sources.wordnet import WordNetUnavailableError, get_wordnet


def _chain_to_root(graph: LabelGraph, name: str) -> list[str]:
    chain = [name]
    while len(parents := graph.parents(chain[-1])):
        assert len(parents) == 1, f"{chain[-1]} has several parents"
        chain.append(graph.names[int(parents[0])])
    return chain


def _assert_is_forest_over(graph: LabelGraph, labels: tuple[str, ...]) -> None:
    assert graph.names[: len(labels)] == labels
    assert graph.metadata["labels"] == list(labels)
    assert set(graph.metadata["synsets"]) == set(graph.names)
    for index in range(len(graph)):
        assert len(graph.parents(index)) <= 1, graph.names[index]
    # every abstract node groups at least two labels
    for name in graph.names[len(labels) :]:
        below = {graph.names[i] for i in graph.descendants(name).tolist()}
        assert len(below & set(labels)) >= 2, name


def test_available_names() -> None:
    assert available_builtin() == ("voc", "nus-wide")


def test_voc_hierarchy_has_the_expected_chains() -> None:
    graph = load_builtin("voc")
    labels = BUILTIN_SPECS["voc"].labels
    assert len(labels) == 20
    _assert_is_forest_over(graph, labels)
    assert len(graph) == 35
    assert _chain_to_root(graph, "dog")[:4] == ["dog", "carnivore", "mammal", "animal"]
    assert _chain_to_root(graph, "car")[:4] == [
        "car",
        "motor_vehicle",
        "wheeled_vehicle",
        "vehicle",
    ]
    assert _chain_to_root(graph, "sheep")[:2] == ["sheep", "bovid"]
    assert _chain_to_root(graph, "cow")[:3] == ["cow", "bovid", "ungulate"]
    assert {graph.names[i] for i in graph.children("seat").tolist()} == {"chair", "sofa"}
    assert {graph.names[i] for i in graph.children("craft").tolist()} == {"aeroplane", "boat"}
    assert graph.metadata["synsets"]["tvmonitor"] == "television_receiver.n.01"
    assert graph.metadata["synsets"]["motor_vehicle"] == "motor_vehicle.n.01"


def test_nus_wide_hierarchy_has_the_expected_chains() -> None:
    graph = load_builtin("nus-wide")
    labels = BUILTIN_SPECS["nus-wide"].labels
    assert len(labels) == 81
    _assert_is_forest_over(graph, labels)
    assert _chain_to_root(graph, "dog")[:4] == ["dog", "canine", "carnivore", "mammal"]
    assert "animal" in _chain_to_root(graph, "tiger")
    assert _chain_to_root(graph, "cars")[:2] == ["cars", "vehicle"]
    assert _chain_to_root(graph, "plane")[:3] == ["plane", "craft", "vehicle"]
    assert _chain_to_root(graph, "lake")[:2] == ["lake", "water"]
    assert _chain_to_root(graph, "house")[:2] == ["house", "buildings"]
    assert _chain_to_root(graph, "tree")[-2:] == ["plants", "organism"]
    assert graph.metadata["synsets"]["whales"] == "whale.n.02"


@pytest.mark.slow
def test_shipped_json_is_what_the_generator_builds_now() -> None:
    try:
        get_wordnet()
    except WordNetUnavailableError as exc:
        pytest.skip(str(exc))
    for name in available_builtin():
        shipped = resources.files("mlattack.graph_sources") / "builtin" / f"{name}.json"
        assert json.loads(shipped.read_text(encoding="utf-8")) == build_builtin(name).to_json(), (
            f"{name}.json is stale: run scripts/build_builtin_graphs.py"
        )


def test_builtin_metadata() -> None:
    graph = load_builtin("voc")
    assert graph.metadata["builtin"] == "voc"
    assert graph.metadata["source"] == "wordnet"
    assert graph.metadata["wordnet_version"] == "3.0"


@pytest.mark.parametrize("name", ["coco", "VOC", ""])
def test_unknown_name_lists_the_available_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"available: voc, nus-wide") as info:
        load_builtin(name)
    assert repr(name) in str(info.value)


def test_non_string_name_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str"):
        load_builtin(3)  # type: ignore[arg-type]
