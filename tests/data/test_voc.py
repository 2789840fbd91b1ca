"""VOCDataset on a tiny fake VOCdevkit (XML and class-list modes, corrupt image, bad input)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mlattack.data import VOC_CLASSES, VOCDataset, build_dataset
from mlattack.data.images import UnreadableImageError
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


def test_corrupt_image_is_refused_and_counted_never_replaced(voc_root: Path) -> None:
    ds = VOCDataset(voc_root, split="test", size=16)
    for _ in range(2):
        with pytest.raises(UnreadableImageError, match="000004.jpg"):
            ds[3]
    assert ds.num_skipped == 1 and ds.skipped == {3}
    readable = [ds[i][0] for i in (0, 1, 2)]
    assert all(not torch.equal(readable[0], other) for other in readable[1:])


@pytest.mark.parametrize("image_id", ["../../../outside", "/etc/passwd"])
def test_list_ids_outside_the_folder_are_refused(voc_root: Path, image_id: str) -> None:
    listing = voc_root / "VOC2007" / "ImageSets" / "Main" / "test.txt"
    listing.write_text(listing.read_text() + image_id + "\n")
    with pytest.raises(ValueError, match=r"test\.txt:\d+: image id.*not a path inside"):
        VOCDataset(voc_root, split="test", size=16)


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
