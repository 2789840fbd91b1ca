"""PASCAL VOC 2007/2012 classification from a standard ``VOCdevkit`` folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from mlattack._files import open_regular, read_text
from mlattack.data.images import ImageFileDataset, Transform, path_inside, require_dir
from mlattack.data.labels import GraphSpec, make_label_space, resolve_graph

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


def _year_dir(root: Path, year: str) -> Path:
    """``root`` may be the ``VOCdevkit`` folder (holding ``VOC<year>``) or ``VOC<year>`` itself."""
    for candidate in (root / f"VOC{year}", root):
        if (candidate / "JPEGImages").is_dir() or (candidate / "ImageSets").is_dir():
            return candidate
    raise FileNotFoundError(f"no VOC{year} folder (with JPEGImages/ and ImageSets/) under {root}")


def _read_ids(path: Path, images: Path, root: Path) -> list[str]:
    """Image ids of a list file; an id naming a file outside the ``images`` folder is refused."""
    ids = []
    for line_no, line in enumerate(read_text(path, "VOC image list", inside=root).splitlines(), 1):
        if line.strip():
            image_id = line.split()[0]
            path_inside(images, f"{image_id}.jpg", f"{path}:{line_no}: image id")
            ids.append(image_id)
    return ids


def _labels_from_xml(
    annotations: Path, image_id: str, include_difficult: bool, root: Path
) -> list[str]:
    path = annotations / f"{image_id}.xml"
    try:
        with open_regular(path, "VOC annotation", inside=root) as handle:
            tree = ElementTree.parse(handle)
    except ElementTree.ParseError as exc:
        raise ValueError(f"malformed VOC annotation {path}: {exc}") from exc
    names: list[str] = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ValueError(f"an <object> without <name> in {path}")
        if include_difficult or (obj.findtext("difficult") or "0").strip() != "1":
            names.append(name)
    return names


def _matrix_from_lists(
    main: Path,
    split: str,
    ids: list[str],
    classes: Sequence[str],
    include_difficult: bool,
    root: Path,
) -> np.ndarray:
    """0/1 matrix ``[N, classes]`` from ``ImageSets/Main/<class>_<split>.txt`` (1, 0 = difficult, -1)."""
    position = {image_id: i for i, image_id in enumerate(ids)}
    present = np.zeros((len(ids), len(classes)), dtype=np.float32)
    for c, name in enumerate(classes):
        path = main / f"{name}_{split}.txt"
        text = read_text(path, f"VOC class list for {name!r}", inside=root)
        for line_no, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in {"1", "0", "-1"}:
                raise ValueError(f"{path}:{line_no}: expected '<image id> <1|0|-1>', got {line!r}")
            row = position.get(fields[0])
            if row is not None and (fields[1] == "1" or (include_difficult and fields[1] == "0")):
                present[row, c] = 1.0
    return present


class VOCDataset(ImageFileDataset):
    """PASCAL VOC classification (image-level labels).

    Args:
        root: the ``VOCdevkit`` folder (or its ``VOC<year>`` subfolder).
        year: ``"2007"`` or ``"2012"`` (any ``VOC<year>`` folder works).
        split: an ``ImageSets/Main/<split>.txt`` list: ``train``, ``val``, ``trainval``, ``test``.
        graph: a LabelGraph (or ``"builtin:voc"`` / a graph JSON path) whose nodes include the VOC
            class names; labels are then propagated to their ancestors.
        label_names: output columns (default: the graph's labels, else the 20 VOC classes).
        source: ``"xml"`` (``Annotations/<id>.xml``), ``"lists"`` (``ImageSets/Main/<class>_<split>.txt``)
            or ``"auto"`` (XML when the ``Annotations`` folder exists).
        include_difficult: count objects marked difficult as present (default: not).
        size, transform, validate: see :class:`ImageFileDataset`.

    Every list, annotation and image must lie under the ``VOC<year>`` folder (images under its
    ``JPEGImages``) also after symlinks; one that leads elsewhere is refused by name.
    """

    def __init__(
        self,
        root: str | Path,
        year: str = "2007",
        split: str = "test",
        graph: GraphSpec = None,
        size: int = 224,
        *,
        label_names: Sequence[str] | None = None,
        source: str = "auto",
        include_difficult: bool = False,
        transform: Transform | None = None,
        validate: bool = False,
    ) -> None:
        if source not in {"auto", "xml", "lists"}:
            raise ValueError(f"source must be 'auto', 'xml' or 'lists', got {source!r}")
        base = _year_dir(require_dir(root, "VOCdevkit"), str(year))
        ids = _read_ids(base / "ImageSets" / "Main" / f"{split}.txt", base / "JPEGImages", base)
        space = make_label_space(VOC_CLASSES, label_names=label_names, graph=resolve_graph(graph))
        annotations = base / "Annotations"
        if source == "xml" or (source == "auto" and annotations.is_dir()):
            require_dir(annotations, "VOC Annotations")
            items = [
                [
                    space.index(name, source=str(annotations / f"{image_id}.xml"))
                    for name in _labels_from_xml(annotations, image_id, include_difficult, base)
                ]
                for image_id in ids
            ]
            labels = space.encode(items)
        else:
            main = base / "ImageSets" / "Main"
            present = _matrix_from_lists(main, split, ids, VOC_CLASSES, include_difficult, base)
            full = np.zeros((len(ids), len(space.annotation_names)), dtype=np.float32)
            for c, name in enumerate(VOC_CLASSES):
                if present[:, c].any():  # like XML mode: only classes that occur must be known
                    full[:, space.index(name, source=str(main / f"{name}_{split}.txt"))] = present[
                        :, c
                    ]
            labels = space.encode_matrix(full)
        self.root = base
        self.split = split
        super().__init__(
            [path_inside(base / "JPEGImages", f"{i}.jpg", "VOC image id") for i in ids],
            labels,
            space,
            size=size,
            transform=transform,
            validate=validate,
            images_root=base / "JPEGImages",
        )
