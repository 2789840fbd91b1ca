"""OpenImages image-level labels (human-verified CSV), MIDs mapped to a model's label names."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mlattack._files import csv_rows
from mlattack._validation import check_label_name
from mlattack.data.images import ImageFileDataset, Transform, path_inside, require_dir
from mlattack.data.labels import GraphSpec, make_label_space, resolve_graph

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

REQUIRED_COLUMNS = ("ImageID", "LabelName", "Confidence")


def read_class_descriptions(path: str | Path) -> dict[str, str]:
    """``MID,display name`` rows (no header, as OpenImages ships them) -> ``{mid: name}``."""
    mapping: dict[str, str] = {}
    for line_no, row in csv_rows(path, "OpenImages class descriptions"):
        if not row:
            continue
        if len(row) < 2:
            raise ValueError(f"{path}:{line_no}: expected 'MID,display name', got {row!r}")
        mapping[row[0].strip()] = check_label_name(row[1].strip(), f"{path}:{line_no}: name")
    return mapping


def _mids_from_graph(graph: LabelGraph) -> dict[str, str]:
    """The ``{mid: name}`` map a graph built from the OpenImages hierarchy keeps in its metadata."""
    mids = graph.metadata.get("mids") if isinstance(graph.metadata, Mapping) else None
    if isinstance(mids, Mapping):
        pairs = [(str(k), str(v)) for k, v in mids.items()]
        # accept either direction: MIDs look like "/m/..." or "/g/..."
        if pairs and not pairs[0][0].startswith("/"):
            pairs = [(v, k) for k, v in pairs]
        return dict(pairs)
    if isinstance(mids, Sequence) and not isinstance(mids, str) and len(mids) == len(graph.names):
        return {str(mid): name for mid, name in zip(mids, graph.names, strict=True)}
    return {}


class OpenImagesDataset(ImageFileDataset):
    """OpenImages with image-level labels.

    Args:
        labels_csv: a human-verified image-level labels CSV with a header holding at least
            ``ImageID,LabelName,Confidence`` (the official files also have ``Source``). Confidence > 0.5
            marks a positive label (1 in the official files); lower values are verified negatives and
            are not positives. Images appear when they have at least one row.
        images_dir: the folder of ``<ImageID>.jpg`` files.
        class_descriptions / mid_to_name: how ``LabelName`` MIDs map to label names (a
            ``class-descriptions*.csv`` path, or a mapping). Default: the graph's ``metadata["mids"]``,
            else the MIDs themselves are the names.
        label_names: output columns (a model's labels; default: the graph's labels, else every mapped
            name seen). ``graph``: LabelGraph / ``"builtin:NAME"`` / JSON path; labels propagate up it.

    MIDs with no mapping, or mapped to a name outside the label space, are ignored and counted:
    ``num_unknown_rows`` (positive rows dropped) and ``unknown_labels`` (the distinct MIDs).
    """

    def __init__(
        self,
        labels_csv: str | Path,
        images_dir: str | Path,
        *,
        class_descriptions: str | Path | None = None,
        mid_to_name: Mapping[str, str] | None = None,
        label_names: Sequence[str] | None = None,
        graph: GraphSpec = None,
        size: int = 224,
        transform: Transform | None = None,
        validate: bool = False,
    ) -> None:
        if class_descriptions is not None and mid_to_name is not None:
            raise ValueError("give class_descriptions or mid_to_name, not both")
        resolved = resolve_graph(graph)
        folder = require_dir(images_dir, "OpenImages images")
        if mid_to_name is not None:
            mapping: dict[str, str] | None = dict(mid_to_name)
        elif class_descriptions is not None:
            mapping = read_class_descriptions(class_descriptions)
        else:
            mapping = (_mids_from_graph(resolved) if resolved is not None else {}) or None
        positives = self._read_rows(Path(labels_csv))
        names_seen = sorted(
            {
                name
                for mids in positives.values()
                for mid in mids
                if (name := mapping.get(mid) if mapping is not None else mid) is not None
            }
        )
        space = make_label_space(
            names_seen if label_names is None and resolved is None else (),
            label_names=label_names,
            graph=resolved,
        )
        items: list[list[int]] = []
        unknown: set[str] = set()
        dropped = 0
        for mids in positives.values():
            rows: list[int] = []
            for mid in mids:
                name = mapping.get(mid) if mapping is not None else mid
                if name is None or not space.knows(name):
                    unknown.add(mid)
                    dropped += 1
                    continue
                rows.append(space.index(name, source=str(labels_csv)))
            items.append(rows)
        if unknown:
            warnings.warn(
                f"{labels_csv}: {dropped} positive labels with {len(unknown)} MIDs outside the label "
                f"space were ignored (e.g. {sorted(unknown)[:3]})",
                RuntimeWarning,
                stacklevel=2,
            )
        self.num_unknown_rows = dropped
        self.unknown_labels: frozenset[str] = frozenset(unknown)
        super().__init__(
            [
                path_inside(folder, f"{image_id}.jpg", "OpenImages ImageID")
                for image_id in positives
            ],
            space.encode(items),
            space,
            size=size,
            transform=transform,
            validate=validate,
            images_root=folder,
        )

    @staticmethod
    def _read_rows(path: Path) -> dict[str, list[str]]:
        """``{image id: [positive MIDs]}`` in file order (images with only negatives included)."""
        positives: dict[str, list[str]] = {}
        rows = csv_rows(path, "OpenImages labels CSV")
        header = next((row for _, row in rows if row), [])
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: missing CSV columns {missing} (header: {header})")
        image_col, label_col, confidence_col = (header.index(c) for c in REQUIRED_COLUMNS)
        width = max(image_col, label_col, confidence_col) + 1
        for line_no, row in rows:
            if not row:
                continue
            if len(row) < width:
                raise ValueError(
                    f"{path}:{line_no}: {len(row)} fields, the header names {len(header)}"
                )
            try:
                confidence = float(row[confidence_col])
            except ValueError as exc:
                raise ValueError(
                    f"{path}:{line_no}: bad Confidence {row[confidence_col]!r}"
                ) from exc
            image_id = row[image_col].strip()
            path_inside(path.parent, f"{image_id}.jpg", f"{path}:{line_no}: ImageID")
            mids = positives.setdefault(image_id, [])
            if confidence > 0.5:
                mids.append(row[label_col].strip())
        return positives
