"""NUSWideDataset on a tiny fake release (per-concept files and a label matrix)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlattack.data import NUSWideDataset, build_dataset
from mlattack.graph import LabelGraph


def test_per_concept_files(nus_root: Path) -> None:
    ds = NUSWideDataset(nus_root, split="test", size=16)
    assert ds.label_names == ("animal", "dog", "sky") and len(ds) == 3
    assert ds.labels.tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0]]
    assert ds.paths[2] == nus_root / "Flickr" / "beach" / "0003_13.jpg"
    image, labels = ds[1]
    assert image.shape == (3, 16, 16) and float(image[1].mean()) > 0.6  # green
    assert labels.tolist() == [0.0, 0.0, 1.0]


def test_label_matrix_and_graph(nus_root: Path) -> None:
    matrix = nus_root / "labels.txt"
    matrix.write_text("0 1 0\n0 0 1\n0 0 0\n")
    graph = LabelGraph(["animal", "dog", "sky"], [("animal", "dog")])
    ds = build_dataset(
        "nus-wide", root=nus_root, split="test", size=16, labels_matrix=matrix, graph=graph
    )
    assert isinstance(ds, NUSWideDataset) and ds.graph == graph
    assert torch.equal(ds.labels[0], torch.tensor([1.0, 1.0, 0.0]))  # dog -> animal


def test_bad_nus_input_is_named(nus_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="TrainImagelist.txt"):
        NUSWideDataset(nus_root, split="train")
    with pytest.raises(ValueError, match="split"):
        NUSWideDataset(nus_root, split="dev")
    (nus_root / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Test.txt").write_text("0\n1\n")
    with pytest.raises(ValueError, match=r"Labels_sky_Test.txt has 2 lines"):
        NUSWideDataset(nus_root, split="test")
    matrix = tmp_path / "m.txt"
    matrix.write_text("0 1\n0 0\n1 1\n")
    with pytest.raises(ValueError, match=r"m.txt is 3x2, expected 3x3"):
        NUSWideDataset(nus_root, split="test", labels_matrix=matrix)
    matrix.write_text("0 1 0\n0 0 0\n1 1 0\n")
    graph = LabelGraph(["animal", "dog"], [("animal", "dog")])
    with pytest.raises(ValueError, match="'sky'.* is not in the label graph"):
        NUSWideDataset(nus_root, split="test", labels_matrix=matrix, graph=graph)
