"""The packaged photo manifest, its validation, and the photos through the `objects` label set."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("skimage")
pytest.importorskip("sklearn")

from PIL import Image  # noqa: E402

from mlattack.cli.demo import DEFAULT_BUDGET  # noqa: E402
from mlattack.data.photos import (  # noqa: E402
    PHOTO_MANIFEST,
    PhotoDataset,
    PhotoManifestError,
    load_photo_manifest,
    sample_photos,
)
from mlattack.graph_sources.label_sets import label_set_graph  # noqa: E402
from mlattack.models.imagenet import ImageNetHierarchyModel  # noqa: E402

# The photos as the demo sees them.
DEMO_SIZE = DEFAULT_BUDGET.photo_size


@pytest.fixture(scope="module")
def dataset() -> PhotoDataset:
    return PhotoDataset(size=DEMO_SIZE)


@pytest.fixture(scope="module")
def predictions(dataset: PhotoDataset) -> np.ndarray:
    model = ImageNetHierarchyModel(
        "objects", crops=DEFAULT_BUDGET.crops, input_size=DEMO_SIZE
    ).eval()
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        return (model(images) > 0).numpy()


def _manifest() -> dict[str, Any]:
    return json.loads(PHOTO_MANIFEST.read_text(encoding="utf-8"))


def _with_folder_source(tmp_path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """The packaged manifest reduced to one photo from a source folder under ``tmp_path``."""
    manifest = copy.deepcopy(_manifest())
    manifest["sources"]["local"] = {"path": str(tmp_path)}
    manifest["photos"] = [{"licence": "CC0", "credit": "test", "source": "local", **entry}]
    return manifest


def _write_photo(path: Path) -> None:
    Image.fromarray(np.full((16, 16, 3), 120, dtype=np.uint8)).save(path)


def test_the_manifest_holds_twenty_or_more_photos_with_licences_and_known_labels() -> None:
    photos = load_photo_manifest().photos
    vocabulary = set(label_set_graph("objects").names)
    assert len(photos) >= 20
    assert len({p.name for p in photos}) == len(photos)
    assert {p.source for p in photos} == set(_manifest()["sources"])
    for photo in photos:
        assert photo.path.is_file() and photo.licence and photo.credit, photo.name
        assert set(photo.labels) <= vocabulary, photo.name


def test_dataset_items_are_images_with_labels_closed_upward(dataset: PhotoDataset) -> None:
    assert len(dataset) == len(load_photo_manifest().photos)
    image, labels = dataset[dataset.photo_names.index("chelsea")]
    assert image.shape == (3, DEMO_SIZE, DEMO_SIZE) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    graph = dataset.graph
    assert graph is not None
    on = {dataset.label_names[i] for i in torch.nonzero(labels).flatten().tolist()}
    assert on == {"cat", *(graph.names[i] for i in graph.ancestors("cat"))}
    assert not graph.violations(dataset.labels.bool().numpy()).any()


def test_dataset_selects_photos_and_output_columns() -> None:
    chosen = PhotoDataset(["cat", "carnivore", "dog"], size=32, names=["pekinese", "chelsea"])
    assert chosen.photo_names == ["pekinese", "chelsea"] and chosen.label_names == (
        "cat",
        "carnivore",
        "dog",
    )
    assert chosen.labels.tolist() == [[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="unknown photos"):
        PhotoDataset(size=32, names=["unicorn"])


def test_sample_photos_gives_every_manifest_photo() -> None:
    photos = sample_photos(size=24, names=["chelsea", "camera"])
    assert list(photos) == ["chelsea", "camera"]
    assert all(p.shape == (3, 24, 24) for p in photos.values())


def test_chelsea_gives_cat_and_its_ancestors_consistently(
    dataset: PhotoDataset, predictions: np.ndarray
) -> None:
    graph = dataset.graph
    assert graph is not None
    row = predictions[dataset.photo_names.index("chelsea")]
    cat_chain = {"cat", *(graph.names[i] for i in graph.ancestors("cat"))}
    assert cat_chain <= {graph.names[i] for i in np.flatnonzero(row)}
    assert len(cat_chain) >= 3
    assert graph.is_consistent(row[None])[0]


def test_most_photos_get_a_label_and_most_get_a_true_one(
    dataset: PhotoDataset, predictions: np.ndarray
) -> None:
    truth = dataset.labels.bool().numpy()
    # Two crops at 224 px (the demo's setting) give 20 of the 28 photos a label.
    assert predictions.any(axis=1).mean() >= 0.7
    # The demo attacks the photos whose prediction contains a label they show.
    assert (predictions & truth).any(axis=1).sum() >= 20


def test_missing_file_is_an_error_when_the_manifest_is_read(tmp_path: Path) -> None:
    manifest = _with_folder_source(
        tmp_path, {"name": "gone", "file": "gone.png", "labels": ["cat"]}
    )
    with pytest.raises(PhotoManifestError, match="'gone'.*does not exist"):
        load_photo_manifest(manifest)


def test_unreadable_file_is_an_error_when_the_manifest_is_read(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    manifest = _with_folder_source(
        tmp_path, {"name": "broken", "file": "broken.png", "labels": ["cat"]}
    )
    with pytest.raises(PhotoManifestError, match="'broken'.*cannot read image"):
        load_photo_manifest(manifest)


def test_label_outside_the_vocabulary_is_an_error(tmp_path: Path) -> None:
    _write_photo(tmp_path / "ok.png")
    manifest = _with_folder_source(
        tmp_path, {"name": "ok", "file": "ok.png", "labels": ["cat", "unicorn"]}
    )
    with pytest.raises(PhotoManifestError, match=r"'ok'.*\['unicorn'\] are not in the vocabulary"):
        load_photo_manifest(manifest)
    manifest["photos"][0]["labels"] = ["cat"]
    (photo,) = load_photo_manifest(manifest).photos
    assert photo.path == (tmp_path / "ok.png").resolve() and photo.labels == ("cat",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"file": "../outside.png"}, "outside its source"),
        ({"source": "elsewhere"}, "unknown source 'elsewhere'"),
        ({"labels": []}, "non-empty list"),
        ({"extra": 1}, "exactly the keys"),
    ],
)
def test_bad_entries_are_named(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    _write_photo(folder / "ok.png")
    _write_photo(tmp_path / "outside.png")
    manifest = _with_folder_source(folder, {"name": "ok", "file": "ok.png", "labels": ["cat"]})
    manifest["photos"][0].update(change)
    with pytest.raises(PhotoManifestError, match=message):
        load_photo_manifest(manifest)


def test_missing_source_package_says_what_to_install(tmp_path: Path) -> None:
    manifest = _with_folder_source(tmp_path, {"name": "x", "file": "x.png", "labels": ["cat"]})
    manifest["sources"]["local"] = {
        "path": str(tmp_path / "absent"),
        "install": "apt-get install x",
    }
    with pytest.raises(PhotoManifestError, match="not installed.*apt-get install x"):
        load_photo_manifest(manifest)
    manifest["sources"]["local"] = {"module": "no_such_module_here", "install": "pip install y"}
    with pytest.raises(PhotoManifestError, match="pip install y"):
        load_photo_manifest(manifest)


def test_bad_manifest_structure_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PhotoManifestError, match="schema"):
        load_photo_manifest({"schema": "other", "version": 1})
    path = tmp_path / "manifest.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(PhotoManifestError, match="cannot read photo manifest"):
        load_photo_manifest(path)
    manifest = _manifest()
    manifest["vocabulary"] = "no-such-label-set"
    with pytest.raises(PhotoManifestError, match="vocabulary"):
        load_photo_manifest(manifest)
