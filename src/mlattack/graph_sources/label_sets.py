"""ImageNet label sets: labels over ImageNet-1k classes, with a WordNet graph among them.

A label set names labels, the ImageNet classes each covers, and the (parent, child) edges between
them. The built-in ones (:data:`BUILTIN_LABEL_SETS`) are JSON files in ``graph_sources/label_sets/``
written by ``scripts/build_label_sets.py`` from WordNet; at run time only the JSON is read.
:class:`~mlattack.models.ImageNetHierarchyModel` reads an ImageNet classifier through one, and the
packaged photos' labels (:mod:`mlattack.data.photos`) are drawn from one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlattack.graph import LabelGraph

__all__ = [
    "BUILTIN_LABEL_SETS",
    "LABEL_SET_DIR",
    "NUM_IMAGENET_CLASSES",
    "graph_of_label_set",
    "label_set_graph",
    "load_label_set",
]

LABEL_SET_DIR = Path(__file__).resolve().parent / "label_sets"
BUILTIN_LABEL_SETS = ("voc-imagenet", "imagenet-auto", "objects")
#: Former names of built-in label sets, refused with a pointer to the new one. "voc" was renamed:
#: the packaged graph ``builtin:voc`` (35 labels) is another graph than this label set (34).
RENAMED_LABEL_SETS = {"voc": "voc-imagenet"}
LABEL_SET_SCHEMA = "mlattack.imagenet_label_set"
LABEL_SET_VERSION = 1
NUM_IMAGENET_CLASSES = 1000


def load_label_set(label_set: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read and validate a label set: a built-in name, a JSON file, or the parsed mapping.

    Raises:
        ValueError: unknown built-in name, wrong schema/version, duplicate or missing label
            names, ImageNet indices out of range, a label covering no class or every class, or
            an edge naming an unknown label. The message names the file or label.
    """
    if isinstance(label_set, Mapping):
        data, source = dict(label_set), "label set"
    else:
        path = Path(label_set)
        if isinstance(label_set, str) and label_set in RENAMED_LABEL_SETS:
            raise ValueError(
                f"label set {label_set!r} was renamed {RENAMED_LABEL_SETS[label_set]!r} (it is not "
                f"the graph builtin:{label_set}); use label_set={RENAMED_LABEL_SETS[label_set]!r}"
            )
        if isinstance(label_set, str) and label_set in BUILTIN_LABEL_SETS:
            path = LABEL_SET_DIR / f"{label_set}.json"
        elif path.suffix != ".json":
            raise ValueError(
                f"unknown label set {str(label_set)!r}: use one of {BUILTIN_LABEL_SETS} "
                "or the path of a .json file written by scripts/build_label_sets.py"
            )
        if not path.is_file():
            raise ValueError(f"label set file {path} does not exist")
        data, source = json.loads(path.read_text(encoding="utf-8")), str(path)
    if data.get("schema") != LABEL_SET_SCHEMA or data.get("version") != LABEL_SET_VERSION:
        raise ValueError(
            f"{source}: expected schema {LABEL_SET_SCHEMA!r} version {LABEL_SET_VERSION}, "
            f"got {data.get('schema')!r} version {data.get('version')!r}"
        )
    labels = data.get("labels")
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"{source}: 'labels' must be a non-empty list")
    names: set[str] = set()
    for position, label in enumerate(labels):
        name = label.get("name") if isinstance(label, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"{source}: label {position} has no name")
        if name in names:
            raise ValueError(f"{source}: duplicate label {name!r}")
        names.add(name)
        classes = label.get("imagenet")
        if not isinstance(classes, list) or not all(
            isinstance(c, int) and 0 <= c < NUM_IMAGENET_CLASSES for c in classes
        ):
            raise ValueError(f"{source}: label {name!r} needs ImageNet indices in [0, 1000)")
        if not 0 < len(set(classes)) < NUM_IMAGENET_CLASSES:
            # Mass 0 or 1 everywhere would give infinite log-odds and no gradient.
            raise ValueError(f"{source}: label {name!r} must cover some, not all, ImageNet classes")
    for edge in data.get("edges", []):
        unknown = [n for n in edge if n not in names]
        if len(edge) != 2 or unknown:
            raise ValueError(f"{source}: edge {edge!r} names unknown label(s) {unknown}")
    return data


def label_set_graph(label_set: str | Path | Mapping[str, Any]) -> LabelGraph:
    """The label graph of a label set (see :func:`load_label_set`), labels in file order."""
    return graph_of_label_set(load_label_set(label_set))


def graph_of_label_set(spec: Mapping[str, Any]) -> LabelGraph:
    """The graph of a label set already read by :func:`load_label_set`."""
    return LabelGraph(
        [label["name"] for label in spec["labels"]],
        [(parent, child) for parent, child in spec.get("edges", [])],
        metadata={
            "source": "wordnet",
            "label_set": str(spec.get("name", "custom")),
            "synsets": {label["name"]: label.get("synsets", []) for label in spec["labels"]},
        },
    )
