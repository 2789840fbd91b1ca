"""OpenImagesDataset on a few CSV rows: confidences, MID mapping, unknown MIDs, graph closure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlattack.data import OpenImagesDataset, build_dataset
from mlattack.graph import LabelGraph

LabelsOn = Callable[[Any, int], set[str]]


def test_positive_rows_become_labels_and_unknown_mids_are_counted(
    openimages_files: tuple[Path, Path, Path], labels_on: LabelsOn
) -> None:
    labels, images, descriptions = openimages_files
    with pytest.warns(RuntimeWarning, match="/m/unknown"):
        ds = OpenImagesDataset(labels, images, class_descriptions=descriptions, size=16)
    assert ds.label_names == ("Car", "Cat", "Dog")  # the mapped names seen as positives
    # cat=0 is a negative
    assert [labels_on(ds, i) for i in range(3)] == [{"Dog"}, {"Cat"}, {"Car"}]
    assert ds.num_unknown_rows == 1 and ds.unknown_labels == {"/m/unknown"}
    image, _ = ds[2]
    assert image.shape == (3, 16, 16) and float(image[2].mean()) > 0.6  # blue


def test_model_label_names_and_graph(
    openimages_files: tuple[Path, Path, Path], labels_on: LabelsOn
) -> None:
    labels, images, _ = openimages_files
    graph = LabelGraph(["Animal", "Dog", "Cat"], [("Animal", "Dog"), ("Animal", "Cat")])
    mapping = {"/m/dog": "Dog", "/m/cat": "Cat", "/m/car": "Car"}
    with pytest.warns(RuntimeWarning, match="2 positive labels"):
        ds = build_dataset(
            "openimages",
            labels_csv=labels,
            images_dir=images,
            mid_to_name=mapping,
            graph=graph,
            size=16,
        )
    assert isinstance(ds, OpenImagesDataset)
    assert ds.label_names == ("Animal", "Dog", "Cat")
    assert [labels_on(ds, i) for i in range(3)] == [{"Animal", "Dog"}, {"Animal", "Cat"}, set()]
    assert ds.unknown_labels == {"/m/unknown", "/m/car"}  # Car is not a node of the graph


def test_mids_from_graph_metadata(openimages_files: tuple[Path, Path, Path]) -> None:
    labels, images, _ = openimages_files
    graph = LabelGraph(["Dog", "Cat"])
    graph.metadata["mids"] = {"Dog": "/m/dog", "Cat": "/m/cat"}
    with pytest.warns(RuntimeWarning):
        ds = OpenImagesDataset(labels, images, graph=graph, label_names=["Cat"], size=16)
    assert ds.label_names == ("Cat",) and ds.labels[:, 0].tolist() == [0.0, 1.0, 0.0]


def test_bad_openimages_input_is_named(
    openimages_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    labels, images, descriptions = openimages_files
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        OpenImagesDataset(tmp_path / "missing.csv", images)
    with pytest.raises(FileNotFoundError, match="no_images"):
        OpenImagesDataset(labels, tmp_path / "no_images")
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageID,Label\nx,/m/dog\n")
    with pytest.raises(ValueError, match=r"missing CSV columns \['LabelName', 'Confidence'\]"):
        OpenImagesDataset(bad, images)
    bad.write_text("ImageID,LabelName,Confidence\nx,/m/dog,high\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: bad Confidence 'high'"):
        OpenImagesDataset(bad, images)
    with pytest.raises(ValueError, match="not both"):
        OpenImagesDataset(labels, images, class_descriptions=descriptions, mid_to_name={})


@pytest.mark.parametrize("image_id", ["../../etc/passwd", "/etc/passwd"])
def test_image_ids_outside_the_folder_are_refused(
    openimages_files: tuple[Path, Path, Path], image_id: str
) -> None:
    labels, images, _ = openimages_files
    with labels.open("a", encoding="utf-8") as handle:
        handle.write(f"{image_id},verification,/m/dog,1\n")
    with pytest.raises(ValueError, match=r"labels.*csv:\d+: ImageID.*not a path inside"):
        OpenImagesDataset(labels, images, size=16)
