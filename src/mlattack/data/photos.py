"""Real photos that ship inside installed packages, with hand-written labels (no download).

The manifest ``photos.json`` beside this module lists natural photos from scikit-image,
scikit-learn and matplotlib (Python packages) and from Debian's ``opencv-doc`` package (read from
``/usr/share/doc/opencv-doc``; ``setup.sh`` installs it). Each entry names its source package, its
file inside that package, its licence and credit, and its labels: the concrete categories it
shows, in the ``objects`` label set of :class:`~mlattack.models.ImageNetHierarchyModel`. The
photos themselves are never copied into this package.

:func:`load_photo_manifest` validates the whole manifest up front (every file present and
decodable, every label in the vocabulary), so a bad entry fails when the manifest is read, not
halfway through an experiment. :class:`PhotoDataset` serves the photos like
:class:`~mlattack.data.ImageFolderDataset`, with label vectors closed upward through the label
graph; :func:`sample_photos` gives them as plain tensors.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mlattack._validation import check_int
from mlattack.data.images import ImageFileDataset, load_image
from mlattack.data.labels import make_label_space
from mlattack.graph_sources.label_sets import label_set_graph, load_label_set

__all__ = [
    "PHOTO_MANIFEST",
    "Photo",
    "PhotoDataset",
    "PhotoManifest",
    "PhotoManifestError",
    "load_photo_manifest",
    "sample_photos",
]

PHOTO_MANIFEST = Path(__file__).resolve().with_name("photos.json")
MANIFEST_SCHEMA = "mlattack.photo_manifest"
MANIFEST_VERSION = 1
_ENTRY_KEYS = {"name", "source", "file", "labels", "licence", "credit"}


class PhotoManifestError(ValueError):
    """A photo manifest that cannot be used: bad structure, missing file, unknown label."""


@dataclass(frozen=True)
class Photo:
    """One manifest entry, resolved: ``path`` is the file inside its source package."""

    name: str
    source: str
    path: Path
    labels: tuple[str, ...]
    licence: str
    credit: str


@dataclass(frozen=True)
class PhotoManifest:
    """A validated manifest: the label set its labels are written in, and its photos."""

    vocabulary: str
    photos: tuple[Photo, ...]


def _source_root(name: str, spec: Any, where: str) -> Path:
    """The folder a source's files are relative to: a Python package's folder or a fixed path."""
    if not isinstance(spec, Mapping) or ("module" in spec) == ("path" in spec):
        raise PhotoManifestError(
            f"{where}: source {name!r} needs exactly one of 'module' or 'path'"
        )
    install = spec.get("install", "")
    if "path" in spec:
        root = Path(str(spec["path"]))
    else:
        found = importlib.util.find_spec(str(spec["module"]))
        locations = list(found.submodule_search_locations or []) if found else []
        if not locations:
            raise PhotoManifestError(
                f"{where}: source {name!r} needs the Python package {spec['module']!r}: {install}"
            )
        root = Path(locations[0]) / str(spec.get("folder", ""))
    if not root.is_dir():
        raise PhotoManifestError(f"{where}: source {name!r} is not installed ({root}): {install}")
    return root.resolve()


def _check_readable(path: Path, where: str) -> None:
    try:
        with Image.open(path) as opened:
            opened.load()  # a full decode: a truncated file fails here, not later
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PhotoManifestError(f"{where}: cannot read image {path}: {exc}") from exc


def _vocabulary(name: Any, where: str) -> tuple[str, ...]:
    if not isinstance(name, str):
        raise PhotoManifestError(f"{where}: 'vocabulary' must name a label set, got {name!r}")
    try:
        label_set = load_label_set(name)
    except ValueError as exc:
        raise PhotoManifestError(f"{where}: 'vocabulary': {exc}") from exc
    return tuple(label["name"] for label in label_set["labels"])


def load_photo_manifest(
    manifest: str | Path | Mapping[str, Any] = PHOTO_MANIFEST,
    *,
    vocabulary: Sequence[str] | None = None,
) -> PhotoManifest:
    """Read and validate a photo manifest: a JSON file or its parsed content.

    Args:
        manifest: the manifest (default: the packaged ``photos.json``).
        vocabulary: the label names entries may use; default: the labels of the label set the
            manifest names under ``vocabulary``.

    Raises:
        PhotoManifestError: wrong schema or version, a duplicate or empty name, an unknown source
            or one that is not installed (the message says what to install), a file outside its
            source's folder, missing or not decodable, an entry with no label or a label not in
            the vocabulary. Every message names the entry.
    """
    if isinstance(manifest, Mapping):
        data: Any = manifest
        where = "photo manifest"
    else:
        path = Path(manifest)
        where = str(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PhotoManifestError(f"cannot read photo manifest {path}: {exc}") from exc
    if not isinstance(data, Mapping) or (data.get("schema"), data.get("version")) != (
        MANIFEST_SCHEMA,
        MANIFEST_VERSION,
    ):
        raise PhotoManifestError(
            f"{where}: expected schema {MANIFEST_SCHEMA!r} version {MANIFEST_VERSION}"
        )
    vocabulary_name = data.get("vocabulary")
    known = set(_vocabulary(vocabulary_name, where) if vocabulary is None else vocabulary)
    sources = data.get("sources")
    entries = data.get("photos")
    if not isinstance(sources, Mapping) or not isinstance(entries, list) or not entries:
        raise PhotoManifestError(
            f"{where}: needs a 'sources' mapping and a non-empty 'photos' list"
        )
    roots: dict[str, Path] = {}
    photos: list[Photo] = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or set(entry) != _ENTRY_KEYS:
            raise PhotoManifestError(
                f"{where}: photo {position} must have exactly the keys {sorted(_ENTRY_KEYS)}"
            )
        name = entry["name"]
        label = f"{where}: photo {name!r}"
        if not isinstance(name, str) or not name or name in {p.name for p in photos}:
            raise PhotoManifestError(f"{where}: photo {position} has an empty or repeated name")
        source = entry["source"]
        if source not in sources:
            raise PhotoManifestError(
                f"{label}: unknown source {source!r}; known: {sorted(sources)}"
            )
        if source not in roots:
            roots[source] = _source_root(source, sources[source], where)
        file = (roots[source] / str(entry["file"])).resolve()
        if not file.is_relative_to(roots[source]):
            raise PhotoManifestError(f"{label}: file {entry['file']!r} lies outside its source")
        if not file.is_file():
            raise PhotoManifestError(f"{label}: file {file} does not exist")
        _check_readable(file, label)
        labels = entry["labels"]
        if not isinstance(labels, list) or not labels:
            raise PhotoManifestError(f"{label}: 'labels' must be a non-empty list")
        unknown = [t for t in labels if t not in known]
        if unknown:
            raise PhotoManifestError(f"{label}: labels {unknown} are not in the vocabulary")
        photos.append(
            Photo(name, source, file, tuple(labels), str(entry["licence"]), str(entry["credit"]))
        )
    return PhotoManifest(str(vocabulary_name), tuple(photos))


def _select(photos: Sequence[Photo], names: Sequence[str] | None) -> list[Photo]:
    if names is None:
        return list(photos)
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names must be a sequence of photo names, got {names!r}")
    by_name = {photo.name: photo for photo in photos}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown photos {unknown}; available: {sorted(by_name)}")
    return [by_name[n] for n in names]


class PhotoDataset(ImageFileDataset):
    """The manifest's photos with their labels, like :class:`~mlattack.data.ImageFolderDataset`.

    Yields ``(image float [3, size, size] in [0, 1], labels float [C] of 0/1)``; the label vector
    is closed upward through the label graph (a ``cat`` photo is also a ``carnivore`` and a
    ``mammal``). The photos are decoded once, when the dataset is built.

    Args:
        label_names: output columns (default: every label of the manifest's vocabulary); each must
            be a label of the vocabulary's graph.
        size: side of the square the photos are resized to.
        names: the photos to use, in order (default: all of them, in manifest order).
        manifest: the manifest (see :func:`load_photo_manifest`).

    Attributes (besides ImageFileDataset's): ``photo_names``, ``photos`` (the manifest entries).
    """

    def __init__(
        self,
        label_names: Sequence[str] | None = None,
        *,
        size: int = 224,
        names: Sequence[str] | None = None,
        manifest: str | Path | Mapping[str, Any] = PHOTO_MANIFEST,
    ) -> None:
        loaded = load_photo_manifest(manifest)
        graph = label_set_graph(loaded.vocabulary)
        self.photos = tuple(_select(loaded.photos, names))
        self.photo_names = [photo.name for photo in self.photos]
        space = make_label_space((), label_names=label_names, graph=graph)
        items = [[space.index(t, source=p.name) for t in p.labels] for p in self.photos]
        super().__init__(
            [photo.path for photo in self.photos], space.encode(items), space, size=size
        )
        self._images = [load_image(photo.path, self.size) for photo in self.photos]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} photos")
        return self._images[index], self.labels[index]


def sample_photos(
    size: int | None = None, *, names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """The packaged photos as float tensors ``[3, H, W]`` in ``[0, 1]``, by name.

    Grey photos are repeated over three channels. With ``size``, every photo is resized
    (bilinear) to ``size x size`` so the photos stack into one batch; by default each keeps its
    own size. ``names`` picks photos (default: all, in manifest order); see ``photos.json``.

    Raises:
        PhotoManifestError: a source package is missing (the message says what to install).
        ValueError: ``size`` is not a positive integer, or an unknown photo name.
    """
    if size is not None:
        check_int(size, "size", minimum=1)
    photos = _select(load_photo_manifest().photos, names)
    if size is not None:
        return {photo.name: load_image(photo.path, size) for photo in photos}
    loaded = {}
    for photo in photos:
        with Image.open(photo.path) as opened:
            array = np.asarray(opened.convert("RGB"), dtype=np.uint8).copy()
        loaded[photo.name] = torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
    return loaded
