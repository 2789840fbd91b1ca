"""The OpenImages box-label hierarchy (``bbox_labels_600_hierarchy.json``) as a LabelGraph.

The official file is a nested JSON tree: each node has a ``"LabelName"`` (a Freebase MID such as
``"/m/0k4j"``) and optional ``"Subcategory"`` and ``"Part"`` lists of child nodes.  A class that
sits under several parents appears once under each, so the tree unfolds a DAG; this reader folds
it back, keeping every parent.  The root ``/m/0bl9f`` ("Entity") is dropped, so its children
become roots.

Labels are ordered by MID, which is the order of the official ``class-descriptions-boxable.csv``
and of the classifiers trained on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlattack._files import csv_rows, read_json_file
from mlattack._validation import check_bool
from mlattack.graph import LabelGraph

__all__ = ["ENTITY_MID", "load_openimages_graph", "read_class_descriptions"]

ENTITY_MID = "/m/0bl9f"


def _read_hierarchy(path: Path) -> Mapping[str, Any]:
    data = read_json_file(path, "OpenImages hierarchy file")
    if not isinstance(data, Mapping):
        raise ValueError(f"OpenImages hierarchy file {str(path)!r} must hold a JSON object")
    return data


def read_class_descriptions(path: str | Path) -> dict[str, str]:
    """``{MID: display name}`` from an OpenImages class-descriptions CSV (header optional)."""
    path = Path(path)
    descriptions: dict[str, str] = {}
    try:
        for line_number, row in csv_rows(path, "class descriptions file"):
            if not row or (line_number == 1 and row[0] == "LabelName"):
                continue
            if len(row) < 2 or not row[0].startswith("/") or not row[1]:
                raise ValueError(
                    f"class descriptions file {str(path)!r}, line {line_number}: "
                    f"expected 'MID,display name', got {row!r}"
                )
            descriptions[row[0]] = row[1]
    except FileNotFoundError:
        raise ValueError(f"class descriptions file {str(path)!r} does not exist") from None
    except OSError as error:  # a directory, no permission, ...
        raise ValueError(
            f"class descriptions file {str(path)!r} cannot be read: {error.strerror}"
        ) from None
    return descriptions


def _describe_node(node: Any) -> str:
    """A short description of a hierarchy node for an error message (nodes can be huge)."""
    if isinstance(node, Mapping):
        keys = ", ".join(repr(key) for key in list(node)[:5])
        return f"an object with keys [{keys}{', ...' if len(node) > 5 else ''}]"
    text = repr(node) if isinstance(node, str | int | float | bool) or node is None else ""
    return f"{type(node).__name__} {text[:40]}".rstrip()


def _collect_edges(
    hierarchy: Mapping[str, Any], path: Path, include_parts: bool
) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Walk the nested tree; returns (MIDs in first-seen order, Subcategory edges, Part edges)."""
    mids: dict[str, None] = {}
    subcategory_edges: list[tuple[str, str]] = []
    part_edges: list[tuple[str, str]] = []
    stack: list[Mapping[str, Any]] = [hierarchy]
    while stack:
        node = stack.pop()
        mid = node.get("LabelName") if isinstance(node, Mapping) else None
        if not isinstance(mid, str):
            raise ValueError(
                f"OpenImages hierarchy file {str(path)!r}: a node lacks a string 'LabelName' "
                f"({_describe_node(node)})"
            )
        mids.setdefault(mid, None)
        for key, edges in (("Subcategory", subcategory_edges), ("Part", part_edges)):
            children = node.get(key, [])
            if not isinstance(children, list):
                raise ValueError(
                    f"OpenImages hierarchy file {str(path)!r}: {key!r} of {mid} must be a list"
                )
            if key == "Part" and not include_parts:
                continue
            for child in reversed(children):
                child_mid = child.get("LabelName") if isinstance(child, Mapping) else None
                if isinstance(child_mid, str):
                    edges.append((mid, child_mid))
                stack.append(child)
    return list(mids), subcategory_edges, part_edges


def load_openimages_graph(
    hierarchy_json: str | Path,
    class_descriptions_csv: str | Path | None = None,
    *,
    include_parts: bool = False,
) -> LabelGraph:
    """Read the official OpenImages hierarchy into a :class:`~mlattack.graph.LabelGraph`.

    Args:
        hierarchy_json: ``bbox_labels_600_hierarchy.json``.
        class_descriptions_csv: ``class-descriptions-boxable.csv`` (or the full
            ``oidv6-class-descriptions.csv``); when given, labels are named by their display
            names, otherwise by their MIDs.  Display names shared by several MIDs get the MID
            appended (``"Name (/m/...)"``), listed in ``metadata["renamed"]``.
        include_parts: also add ``"Part"`` edges (whole -> part), listed in
            ``metadata["part_edges"]``; by default only ``"Subcategory"`` edges.  A bool.

    ``metadata``: ``source``, ``include_parts``, ``mids`` (``{label name: MID}``),
    ``renamed``, ``part_edges``.

    Raises:
        TypeError: ``include_parts`` is not a bool, or a path is not a str or Path.
        ValueError: a file that is missing, unreadable, not JSON, nested too deeply to parse,
            or whose structure is wrong (a node without a string ``LabelName``, children that are
            not a list, a cycle, a self-loop, an empty MID), or MIDs without a display name; the
            message names the file.
    """
    check_bool(include_parts, "include_parts")
    for name, value in (
        ("hierarchy_json", hierarchy_json),
        ("class_descriptions_csv", class_descriptions_csv),
    ):
        if value is not None and not isinstance(value, str | Path):
            raise TypeError(f"{name} must be a path (str or Path), got {type(value).__name__}")
    if hierarchy_json is None:
        raise TypeError("hierarchy_json must be a path (str or Path), got None")
    path = Path(hierarchy_json)
    hierarchy = _read_hierarchy(path)
    mids, subcategory_edges, part_edges = _collect_edges(hierarchy, path, include_parts)
    mids = sorted(mid for mid in mids if mid != ENTITY_MID)
    subcategory_edges = [(p, c) for p, c in subcategory_edges if ENTITY_MID not in (p, c)]
    part_edges = [(p, c) for p, c in part_edges if ENTITY_MID not in (p, c)]

    renamed: dict[str, str] = {}
    if class_descriptions_csv is None:
        name_of = {mid: mid for mid in mids}
    else:
        descriptions = read_class_descriptions(class_descriptions_csv)
        missing = [mid for mid in mids if mid not in descriptions]
        if missing:
            raise ValueError(
                f"class descriptions file {str(class_descriptions_csv)!r} has no display name "
                f"for {len(missing)} hierarchy MIDs, e.g. {missing[:5]}"
            )
        mids_by_name: dict[str, list[str]] = {}
        for mid in mids:
            mids_by_name.setdefault(descriptions[mid], []).append(mid)
        name_of = {}
        for display_name, sharing in mids_by_name.items():
            for mid in sharing:
                name = display_name if len(sharing) == 1 else f"{display_name} ({mid})"
                name_of[mid] = name
                if len(sharing) > 1:
                    renamed[name] = display_name

    edges = [(name_of[p], name_of[c]) for p, c in subcategory_edges + part_edges]
    metadata: dict[str, Any] = {
        "source": "openimages",
        "hierarchy_file": path.name,
        "include_parts": include_parts,
        "mids": {name_of[mid]: mid for mid in mids},
        "renamed": renamed,
        "part_edges": sorted({(name_of[p], name_of[c]) for p, c in part_edges}),
    }
    metadata["part_edges"] = [list(edge) for edge in metadata["part_edges"]]
    try:
        return LabelGraph([name_of[mid] for mid in mids], edges, metadata=metadata)
    except ValueError as error:  # a cycle, a self-loop, an empty MID: say which file
        raise ValueError(f"OpenImages hierarchy file {str(path)!r}: {error}") from None
