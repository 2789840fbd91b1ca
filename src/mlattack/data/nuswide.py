"""NUS-WIDE (81 concepts) from its standard release layout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlattack._files import read_text
from mlattack.data.images import ImageFileDataset, Transform, path_inside, require_dir
from mlattack.data.labels import GraphSpec, make_label_space, resolve_graph

SPLIT_FILES = {
    "train": ("TrainImagelist.txt", "TrainTestLabels", "Labels_{concept}_Train.txt"),
    "test": ("TestImagelist.txt", "TrainTestLabels", "Labels_{concept}_Test.txt"),
    "all": ("Imagelist.txt", "AllLabels", "Labels_{concept}.txt"),
}


def _read_lines(path: Path, what: str, root: Path | None) -> list[str]:
    """The non-blank lines of a text file (under ``root`` after symlinks, unless None)."""
    return [
        line.strip() for line in read_text(path, what, inside=root).splitlines() if line.strip()
    ]


def _image_relpath(entry: str) -> Path:
    """``C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg`` or ``actor\\0001_...jpg`` -> ``actor/0001_...jpg``."""
    parts = [p for p in entry.replace("\\", "/").split("/") if p]
    return Path(*parts[-2:])


def _read_column(path: Path, expected: int, root: Path) -> np.ndarray:
    values = _read_lines(path, "NUS-WIDE label", root)
    if len(values) != expected:
        raise ValueError(f"{path} has {len(values)} lines, the image list has {expected}")
    if any(v not in {"0", "1"} for v in values):
        raise ValueError(f"{path}: every line must be 0 or 1")
    return np.array([v == "1" for v in values], dtype=np.float32)


def _read_matrix(path: Path, expected_rows: int, expected_cols: int) -> np.ndarray:
    lines = read_text(path, "NUS-WIDE label matrix").splitlines()
    try:
        matrix = np.loadtxt(lines, dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"malformed NUS-WIDE label matrix {path}: {exc}") from exc
    if matrix.shape != (expected_rows, expected_cols):
        raise ValueError(
            f"{path} is {matrix.shape[0]}x{matrix.shape[1]}, expected {expected_rows}x{expected_cols} "
            "(one row per listed image, one column per concept)"
        )
    return (matrix > 0).astype(np.float32)


class NUSWideDataset(ImageFileDataset):
    """NUS-WIDE with its 81 concepts.

    Expected layout under ``root`` (the official release):

    - ``Concepts81.txt``: the concept names, one a line (default: the ``Labels_*`` files found);
    - ``ImageList/{TrainImagelist,TestImagelist,Imagelist}.txt``: one image a line, Windows-style
      paths whose last two parts are ``<folder>/<file>`` under ``images_dir`` (default ``root/Flickr``);
    - per-concept 0/1 files: ``Groundtruth/TrainTestLabels/Labels_<c>_{Train,Test}.txt`` (split
      ``train``/``test``) or ``Groundtruth/AllLabels/Labels_<c>.txt`` (split ``all``);
    - or, instead of the per-concept files, ``labels_matrix``: a whitespace-separated 0/1 matrix with
      one row per listed image and one column per concept (in ``Concepts81.txt`` order).

    ``graph``/``label_names`` as for :class:`~mlattack.data.VOCDataset`. The lists and label files
    must lie under ``root``, the images under their folder, also after symlinks (``labels_matrix``,
    given by path, may lie anywhere).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        graph: GraphSpec = None,
        size: int = 224,
        *,
        images_dir: str | Path | None = None,
        labels_matrix: str | Path | None = None,
        label_names: Sequence[str] | None = None,
        transform: Transform | None = None,
        validate: bool = False,
    ) -> None:
        if split not in SPLIT_FILES:
            raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
        base = require_dir(root, "NUS-WIDE")
        list_name, labels_folder, pattern = SPLIT_FILES[split]
        entries = _read_lines(base / "ImageList" / list_name, "NUS-WIDE image list", base)
        label_dir = base / "Groundtruth" / labels_folder
        concepts_file = base / "Concepts81.txt"
        has_concepts = concepts_file.exists()  # read (or refused by name) even if not regular
        if has_concepts:
            concepts = [
                line.split()[0]
                for line in _read_lines(concepts_file, "NUS-WIDE concept list", base)
            ]
        elif labels_matrix is None:
            prefix, suffix = pattern.split("{concept}")
            found = sorted(
                require_dir(label_dir, "NUS-WIDE label").glob(pattern.replace("{concept}", "*"))
            )
            concepts = [p.name.removeprefix(prefix).removesuffix(suffix) for p in found]
            if not concepts:
                raise FileNotFoundError(f"no {pattern.format(concept='*')} files in {label_dir}")
        else:
            raise FileNotFoundError(
                f"NUS-WIDE concept list not found: {concepts_file} (needed with labels_matrix)"
            )
        if labels_matrix is not None:
            present = _read_matrix(Path(labels_matrix), len(entries), len(concepts))
        else:
            present = np.stack(
                [
                    _read_column(label_dir / pattern.format(concept=c), len(entries), base)
                    for c in concepts
                ],
                axis=1,
            )
        space = make_label_space(concepts, label_names=label_names, graph=resolve_graph(graph))
        columns = [
            space.index(c, source=str(concepts_file if has_concepts else label_dir))
            for c in concepts
        ]
        full = np.zeros((len(entries), len(space.annotation_names)), dtype=np.float32)
        full[:, columns] = present
        folder = require_dir(
            images_dir if images_dir is not None else base / "Flickr", "NUS-WIDE images"
        )
        self.root = base
        self.split = split
        self.concepts: tuple[str, ...] = tuple(concepts)
        super().__init__(
            [
                path_inside(folder, str(_image_relpath(e)), f"NUS-WIDE image list entry {e!r}")
                for e in entries
            ],
            space.encode_matrix(full),
            space,
            size=size,
            transform=transform,
            validate=validate,
            images_root=folder,
        )
