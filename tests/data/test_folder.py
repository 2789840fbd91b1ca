"""ImageFolderDataset + labels CSV, and labelled subsets / splits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mlattack.data import (
    ImageFolderDataset,
    LabelledSubset,
    SyntheticScenes,
    build_dataset,
    split_dataset,
)
from mlattack.data.images import UnreadableImageError
from mlattack.graph import LabelGraph


def test_csv_rows_become_labels(folder_root: Path) -> None:
    ds = ImageFolderDataset(folder_root, size=16)
    assert ds.label_names == ("animal", "car", "cat")
    assert ds.labels.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0], [0, 0, 1]]
    image, labels = ds[1]
    assert image.shape == (3, 16, 16) and float(image[2].mean()) > 0.6  # the blue PNG
    with pytest.raises(UnreadableImageError, match=r"broken\.jpg.*image 3"):
        ds[3]  # never replaced by another image
    assert ds.num_skipped == 1 and ds.skipped == {3}


def test_graph_from_a_json_file(folder_root: Path, tmp_path: Path) -> None:
    graph = LabelGraph(["animal", "cat", "car"], [("animal", "cat")])
    path = tmp_path / "graph.json"
    graph.save(path)
    ds = build_dataset("folder", root=folder_root, graph=str(path), size=16)
    assert isinstance(ds, ImageFolderDataset)
    assert ds.label_names == ("animal", "cat", "car")
    assert ds.labels[3].tolist() == [1.0, 1.0, 0.0]  # "cat" alone gets its parent


def test_bad_folder_input_is_named(folder_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'animal' in .*labels.csv:2"):
        ImageFolderDataset(folder_root, label_names=["cat", "car"])
    with pytest.raises(FileNotFoundError, match="other.csv"):
        ImageFolderDataset(folder_root, folder_root / "other.csv")
    with pytest.raises(FileNotFoundError, match="absent"):
        ImageFolderDataset(tmp_path / "absent")
    (folder_root / "labels.csv").write_text("a.jpg,cat,extra\n")
    with pytest.raises(ValueError, match=r"labels.csv:1: expected 'filename,labels'"):
        ImageFolderDataset(folder_root)
    (folder_root / "labels.csv").write_text("filename,labels\n")
    with pytest.raises(ValueError, match="lists no images"):
        ImageFolderDataset(folder_root)


def test_split_keeps_metadata_and_is_seeded() -> None:
    ds = SyntheticScenes(20, size=16)
    train, val = split_dataset(ds, 0.25, seed=3)
    assert len(train) == 15 and len(val) == 5
    assert sorted(train.indices + val.indices) == list(range(20))
    assert train.label_names == ds.label_names and val.correlated_pairs == ds.correlated_pairs
    assert torch.equal(val.labels, ds.labels[val.indices])
    assert torch.equal(val[0][0], ds[val.indices[0]][0])
    assert split_dataset(ds, 0.25, seed=3)[1].indices == val.indices
    with pytest.raises(ValueError, match="val_fraction"):
        split_dataset(ds, 1.0)
    with pytest.raises(IndexError, match="out of range"):
        LabelledSubset(ds, [0, 20])


@pytest.mark.parametrize("validate", [False, True])
def test_a_folder_of_only_unreadable_images_is_a_clear_error(
    tmp_path: Path, validate: bool
) -> None:
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"\xff\xd8\xff\xe0 a truncated JPEG")
    (tmp_path / "labels.csv").write_text("filename,labels\na.jpg,cat\nb.jpg,dog\n")
    if validate:
        with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match=r"readable.*a\.jpg"):
            ImageFolderDataset(tmp_path, size=16, validate=True)
    else:
        with pytest.raises(UnreadableImageError, match=r"a\.jpg"):
            ImageFolderDataset(tmp_path, size=16)[0]


@pytest.mark.parametrize("listed", ["../outside.png", "/etc/passwd", "a/../../x.png", "a\\..\\x"])
def test_csv_paths_outside_the_root_are_refused(tmp_path: Path, listed: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "labels.csv").write_text(f"filename,labels\nok.png,cat\n{listed},dog\n")
    with pytest.raises(ValueError, match=r"labels\.csv:3: .* not a path inside the dataset root"):
        ImageFolderDataset(root, size=16)
