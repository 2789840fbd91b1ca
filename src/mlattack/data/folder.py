"""A generic folder of images with a labels CSV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mlattack._files import csv_rows
from mlattack._validation import check_label_name
from mlattack.data.images import ImageFileDataset, Transform, path_inside, require_dir
from mlattack.data.labels import GraphSpec, make_label_space, resolve_graph


class ImageFolderDataset(ImageFileDataset):
    """Images under ``root`` listed in a labels CSV.

    CSV format (``labels_csv``, default ``root/labels.csv``): one image a row,
    ``<path relative to root>,<label>;<label>;...`` - e.g. ``cats/001.jpg,cat;animal`` (absolute
    paths and ``..`` are refused: every image lies under ``root``). An empty
    second field means no label. An optional header row ``filename,labels`` is skipped; blank lines
    are ignored. ``label_separator`` changes the ``;``. The CSV is UTF-8 (a byte-order mark is
    accepted; another encoding, e.g. latin-1, is refused naming the line: save it as UTF-8). The
    default ``root/labels.csv`` and every image must lie under ``root`` also after symlinks.

    Output columns are ``label_names`` when given, else the graph's labels, else every label in the
    CSV (sorted). Labels must be known to the graph (when given) or to ``label_names``; an unknown
    label raises ``ValueError`` naming it and its CSV line.
    """

    def __init__(
        self,
        root: str | Path,
        labels_csv: str | Path | None = None,
        *,
        label_names: Sequence[str] | None = None,
        graph: GraphSpec = None,
        size: int = 224,
        label_separator: str = ";",
        transform: Transform | None = None,
        validate: bool = False,
    ) -> None:
        if not label_separator or label_separator == ",":
            raise ValueError(
                f"label_separator must be a non-empty string other than ',', got {label_separator!r}"
            )
        base = require_dir(root, "image")
        csv_path = Path(labels_csv) if labels_csv is not None else base / "labels.csv"
        rows: list[tuple[int, str, list[str]]] = []
        inside = base if labels_csv is None else None  # a CSV given by path may lie anywhere
        for line_no, row in csv_rows(csv_path, "labels CSV", inside=inside):
            if not row or not any(cell.strip() for cell in row):
                continue
            if line_no == 1 and [c.strip().lower() for c in row[:2]] == ["filename", "labels"]:
                continue
            if len(row) > 2:
                raise ValueError(
                    f"{csv_path}:{line_no}: expected 'filename,labels', got {len(row)} fields"
                )
            labels = [t.strip() for t in (row[1] if len(row) > 1 else "").split(label_separator)]
            labels = [check_label_name(t, f"{csv_path}:{line_no}: label") for t in labels if t]
            rows.append((line_no, row[0].strip(), labels))
        if not rows:
            raise ValueError(f"{csv_path} lists no images")
        resolved = resolve_graph(graph)
        native = (
            sorted({t for _, _, labels in rows for t in labels})
            if label_names is None and resolved is None
            else ()
        )
        space = make_label_space(native, label_names=label_names, graph=resolved)
        items = [
            [space.index(t, source=f"{csv_path}:{line_no}") for t in labels]
            for line_no, _, labels in rows
        ]
        self.root = base
        super().__init__(
            [path_inside(base, name, f"{csv_path}:{line_no}") for line_no, name, _ in rows],
            space.encode(items),
            space,
            size=size,
            transform=transform,
            validate=validate,
            images_root=base,
        )
