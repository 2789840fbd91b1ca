"""Graph resolution and alignment to the model's labels (incl. the OpenImages hierarchy)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from exp_fixtures import TinyDataset, TinyModel

from mlattack.experiments.builders import (
    align_graph,
    build_dataset_from_spec,
    ground_truth_columns,
    resolve_graph,
)
from mlattack.experiments.config import DatasetSpec
from mlattack.graph import LabelGraph


def test_model_graph_is_used_as_is() -> None:
    model = TinyModel()
    graph, outside = resolve_graph("model", model, TinyDataset())
    assert graph.names == model.label_names and outside == ()


def test_graph_from_json_file_in_model_order(tmp_path: Path) -> None:
    source = LabelGraph(["vehicle", "animal", "car", "dog", "cat", "bus"],
                        [("vehicle", "car"), ("vehicle", "bus"), ("animal", "dog"), ("animal", "cat")])  # fmt: skip
    source.save(tmp_path / "g.json")
    model = TinyModel()
    graph, _ = resolve_graph("g.json", model, TinyDataset(), base_dir=tmp_path)
    assert graph.names == model.label_names
    assert [graph.names[p] for p in graph.parents("car")] == ["vehicle"]
    with pytest.raises(FileNotFoundError, match="nope.json"):
        resolve_graph("nope.json", model, TinyDataset(), base_dir=tmp_path)


def test_labels_outside_the_graph_become_isolated() -> None:
    source = LabelGraph(["animal", "dog", "cat"], [("animal", "dog"), ("animal", "cat")])
    with pytest.warns(UserWarning, match="not in the graph"):
        graph, outside = align_graph(source, ("dog", "kite", "animal"), what="the graph")
    assert outside == ("kite",)
    assert graph.names == ("dog", "kite", "animal")
    assert len(graph.parents("kite")) == 0 and len(graph.children("kite")) == 0
    with pytest.raises(ValueError, match="shares no label"):
        align_graph(source, ("kite",))


def test_openimages_hierarchy_graph(openimages_dir: Path) -> None:
    model = TinyModel(("Dog", "Carnivore", "Mammal", "Animal", "Not-a-class", "Cat"))
    with pytest.warns(UserWarning, match="1 model labels are not in"):
        graph, outside = resolve_graph(f"openimages:{openimages_dir}", model, TinyDataset())
    assert outside == ("Not-a-class",)
    assert [graph.names[p] for p in graph.parents("Dog")] == ["Carnivore"]


def test_ground_truth_columns_by_name() -> None:
    data = TinyDataset(names=("dog", "animal", "cat", "vehicle", "car", "bus"))
    columns = ground_truth_columns(data, TinyModel().label_names)
    assert columns is not None
    assert columns.tolist() == [1, 0, 2, 3, 4, 5]
    assert torch.equal(columns, torch.tensor([1, 0, 2, 3, 4, 5]))


def test_unknown_model_and_dataset_options_name_their_config_key() -> None:
    from mlattack.experiments.builders import build_dataset_from_spec, build_model_from_spec
    from mlattack.experiments.config import DatasetSpec, ModelSpec

    spec = ModelSpec(name="small-cnn", options={"num_labels": 3, "colour": "red"})
    with pytest.raises(TypeError, match=r"config key 'model.options'.*colour"):
        build_model_from_spec(spec)
    with pytest.raises(TypeError, match=r"config key 'dataset.options'.*shade"):
        build_dataset_from_spec(DatasetSpec(name="synthetic", options={"shade": 1}), TinyModel())


@pytest.mark.slow
def test_sample_photos_carry_their_labels_on_request() -> None:
    from mlattack.graph_sources.label_sets import label_set_graph

    names = tuple(label_set_graph("objects").names)
    model = TinyModel(names)
    spec = DatasetSpec(
        name="sample-photos", options={"size": 32, "names": ["chelsea"], "ground_truth": True}
    )
    labelled = build_dataset_from_spec(spec, model)
    image, labels = labelled[0]
    assert image.shape == (3, 32, 32)
    # The hand-written label, closed upward through the WordNet graph.
    assert {names[i] for i in labels.nonzero().flatten()} == {"cat", "carnivore", "mammal"}
    columns = ground_truth_columns(labelled, names)
    assert columns is not None and torch.equal(columns, torch.arange(len(names)))
    plain = build_dataset_from_spec(DatasetSpec(name="sample-photos", options={"size": 32}), model)
    assert ground_truth_columns(plain, names) is None


def test_sample_photo_labels_need_the_manifests_vocabulary_and_a_strict_bool() -> None:
    from mlattack.graph_sources.label_sets import label_set_graph

    voc = TinyModel(tuple(label_set_graph("voc-imagenet").names))
    with pytest.raises(ValueError, match="aeroplane"):
        build_dataset_from_spec(
            DatasetSpec(name="sample-photos", options={"size": 32, "ground_truth": True}), voc
        )
    with pytest.raises(TypeError, match="dataset.options.*ground_truth"):
        build_dataset_from_spec(
            DatasetSpec(name="sample-photos", options={"size": 32, "ground_truth": "true"}), voc
        )
