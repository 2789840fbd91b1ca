"""VOCDataset on a tiny fake VOCdevkit (XML and class-list modes, corrupt image, bad input)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mlattack.data import VOC_CLASSES, VOCDataset, build_dataset
from mlattack.graph import LabelGraph

LabelsOn = Callable[[Any, int], set[str]]


def test_xml_labels_without_graph(voc_root: Path, labels_on: LabelsOn) -> None:
    ds = VOCDataset(voc_root, year="2007", split="test", size=16)
    assert ds.label_names == VOC_CLASSES and ds.graph is None and len(ds) == 4
    assert labels_on(ds, 0) == {"dog", "person"}
    assert labels_on(ds, 1) == {"car"}  # the difficult bicycle is not counted
    image, labels = ds[0]
    assert image.shape == (3, 16, 16) and labels.shape == (20,)
    # the fixture's first image is red
    assert float(image[0].mean()) > 0.7 and float(image[2].mean()) < 0.3


def test_difficult_objects_can_count(voc_root: Path, labels_on: LabelsOn) -> None:
    ds = VOCDataset(voc_root, split="test", size=16, include_difficult=True)
    assert labels_on(ds, 1) == {"car", "bicycle"}


def test_class_lists_give_the_same_labels_as_xml(voc_root: Path) -> None:
    xml = VOCDataset(voc_root, split="test", size=16, source="xml")
    lists = VOCDataset(voc_root, split="test", size=16, source="lists")
    assert torch.equal(xml.labels, lists.labels)


def test_builtin_graph_propagates_labels_up(voc_root: Path, labels_on: LabelsOn) -> None:
    ds = build_dataset("voc", root=voc_root, split="test", size=16, graph="builtin:voc")
    assert isinstance(ds, VOCDataset) and ds.graph is not None
    present = labels_on(ds, 0)
    assert {"dog", "person", "carnivore", "mammal", "animal"} <= present
    assert not ds.graph.violations(ds.labels.bool().numpy()).any()
    for label in present:
        assert {ds.graph.names[a] for a in ds.graph.ancestors(label)} <= present


def test_corrupt_image_is_skipped_and_counted(voc_root: Path) -> None:
    ds = VOCDataset(voc_root, split="test", size=16)
    with pytest.warns(RuntimeWarning, match="000004.jpg"):
        image, labels = ds[3]
    # the next readable image (wrapping around) stands in, with its own labels
    first_image, first_labels = ds[0]
    assert torch.equal(image, first_image) and torch.equal(labels, first_labels)
    assert ds.num_skipped == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known bad image does not warn twice
        batch = [ds[i] for i in range(len(ds))]
    assert len(batch) == 4 and ds.num_skipped == 1


def test_validate_drops_corrupt_images_up_front(voc_root: Path) -> None:
    with pytest.warns(RuntimeWarning, match="000004.jpg"):
        ds = VOCDataset(voc_root, split="test", size=16, validate=True)
    assert len(ds) == 3 and ds.num_skipped == 1 and ds.labels.shape == (3, 20)


def test_missing_folders_and_files_are_named(voc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VOCDataset(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        VOCDataset(voc_root, year="2012")
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        VOCDataset(voc_root, split="trainval")
    (voc_root / "VOC2007" / "Annotations" / "000003.xml").unlink()
    with pytest.raises(FileNotFoundError, match="000003.xml"):
        VOCDataset(voc_root, split="test")


def test_labels_outside_the_graph_are_named(voc_root: Path) -> None:
    graph = LabelGraph(["animal", "dog", "cat"], [("animal", "dog"), ("animal", "cat")])
    with pytest.raises(ValueError, match=r"'person' in .*000001.xml is not in the label graph"):
        VOCDataset(voc_root, split="test", graph=graph)
    xml = voc_root / "VOC2007" / "Annotations" / "000003.xml"
    xml.write_text(xml.read_text().replace("<name>cat</name>", "<name>kat</name>"))
    with pytest.raises(ValueError, match=r"'kat' in .*000003.xml"):
        VOCDataset(voc_root, split="test")
    xml.write_text("<annotation><object>")
    with pytest.raises(ValueError, match="000003.xml"):
        VOCDataset(voc_root, split="test")


def test_class_lists_with_a_graph_name_the_list_of_an_unknown_class(voc_root: Path) -> None:
    graph = LabelGraph(["animal", "dog", "cat", "person", "car", "sheep"], [("animal", "dog")])
    ds = VOCDataset(
        voc_root, split="test", graph=graph, source="lists"
    )  # all occurring classes known
    assert ds.labels[0].tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    small = LabelGraph(["dog", "cat", "person", "sheep"])
    with pytest.raises(ValueError, match=r"'car' in .*car_test.txt is not in the label graph"):
        VOCDataset(voc_root, split="test", graph=small, source="lists")
