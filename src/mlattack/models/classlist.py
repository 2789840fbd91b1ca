"""Which label each output of an OpenImages model is: a Freebase MID per output, never a display name.

OpenImages identifies classes by MID (``/m/0k4j``); display names repeat (``"Ball"`` names two MIDs
in ``oidv6-class-descriptions.csv``) and the names stored in published checkpoints are spelled
differently from the CSV. So outputs are matched to the dataset and to the hierarchy by MID: the
MIDs come from the checkpoint's own class list, or from a MID list the user gives, and the display
names are only looked up afterwards, for tables and figures.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

_MID = re.compile(r"/[a-z]/[0-9a-z_]+")

# Checkpoint keys that may hold the class list (index -> MID), in the order they are looked at.
CLASS_LIST_KEYS = ("class_list", "mids", "idx_to_mid", "idx_to_class")


def is_mid(value: object) -> bool:
    """Whether ``value`` is a string shaped like a Freebase MID (``/m/...``, ``/g/...``)."""
    return isinstance(value, str) and _MID.fullmatch(value) is not None


def check_mids(mids: Any, num_outputs: int, *, source: str) -> tuple[str, ...]:
    """``mids`` as a tuple after checking it names each of ``num_outputs`` outputs by a distinct MID.

    Raises:
        TypeError: ``mids`` is a single string or not a sequence.
        ValueError: naming ``source`` and the offending value: a count other than ``num_outputs``,
            an entry that is not a MID, or a MID given twice.
    """
    if isinstance(mids, (str, bytes)) or not isinstance(mids, Sequence):
        raise TypeError(
            f"{source}: a MID list must be a sequence of MIDs, got {type(mids).__name__}"
        )
    if len(mids) != num_outputs:
        raise ValueError(
            f"{source}: the MID list has {len(mids)} entries but the model has {num_outputs} outputs"
        )
    for position, mid in enumerate(mids):
        if not is_mid(mid):
            raise ValueError(f"{source}: entry {position} is {mid!r}, not a MID such as '/m/0k4j'")
    repeated = [mid for mid, count in Counter(mids).items() if count > 1]
    if repeated:
        first = repeated[0]
        positions = [i for i, mid in enumerate(mids) if mid == first]
        raise ValueError(f"{source}: MID {first!r} is listed more than once (entries {positions})")
    return tuple(mids)


def read_mid_list(path: str | Path) -> tuple[str, ...]:
    """The MIDs of a class-list file, in output order.

    One class per line: a bare MID, or CSV rows whose first field is the MID (a
    ``class-descriptions`` file restricted to the model's classes works; a ``LabelName`` header is
    skipped). Whether the count fits a model is checked by :func:`check_mids`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MID list not found: {path}")
    mids: list[str] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if not row or not row[0].strip() or (line_number == 1 and row[0] == "LabelName"):
                continue
            mid = row[0].strip()
            if not is_mid(mid):
                raise ValueError(
                    f"{path}, line {line_number}: {mid!r} is not a MID such as '/m/0k4j'"
                )
            mids.append(mid)
    return tuple(mids)


def checkpoint_mids(
    data: Mapping[str, Any], num_outputs: int, *, source: str
) -> tuple[str, ...] | None:
    """The checkpoint's own class list as MIDs, or ``None`` when it keeps no MIDs.

    A list (``class_list``, ``mids``) or an ``{index: MID}`` dict (``idx_to_mid``, or
    ``idx_to_class`` when every value is a MID). Display names (what the official ASL OpenImages
    checkpoints keep in ``idx_to_class``) are not a class list: ``None``.
    """
    for key in CLASS_LIST_KEYS:
        value = data.get(key)
        if isinstance(value, Mapping):
            try:
                order = sorted(value, key=int)
            except (TypeError, ValueError):
                raise ValueError(f"{source}: '{key}' must be keyed by output index") from None
            value = [value[index] for index in order]
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or not value:
            continue
        if key == "idx_to_class" and not all(is_mid(entry) for entry in value):
            continue
        return check_mids(list(value), num_outputs, source=f"{source} '{key}'")
    return None


def names_for_mids(
    mids: Sequence[str], descriptions: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Label names for MIDs: the display name, with ``" (MID)"`` added where several share it.

    Without ``descriptions`` (``{MID: display name}``) the MIDs are the names.

    Raises:
        ValueError: a MID the descriptions do not know (they are then not this model's class
            descriptions), naming it.
    """
    if descriptions is None:
        return tuple(mids)
    unknown = [mid for mid in mids if mid not in descriptions]
    if unknown:
        raise ValueError(
            f"class descriptions have no display name for {len(unknown)} of the model's MIDs, "
            f"e.g. {unknown[:3]}"
        )
    shared = Counter(descriptions[mid] for mid in mids)
    return tuple(
        descriptions[mid] if shared[descriptions[mid]] == 1 else f"{descriptions[mid]} ({mid})"
        for mid in mids
    )


def model_mids(model: object) -> dict[str, str] | None:
    """``{MID: label name}`` of a model that knows its outputs' MIDs (``label_mids``), else ``None``."""
    mids = getattr(model, "label_mids", None)
    if mids is None:
        return None
    names = tuple(getattr(model, "label_names", ()))
    return dict(
        zip(check_mids(list(mids), len(names), source="model.label_mids"), names, strict=True)
    )


def relabel_graph_by_mid(graph: LabelGraph, mid_to_label: Mapping[str, str]) -> LabelGraph:
    """``graph`` with each node renamed to the model's label of the same MID.

    The graph must keep ``metadata["mids"]`` (``{node name: MID}``, as the OpenImages hierarchy
    reader writes); nodes whose MID the model lacks are named by their MID, so no display name can
    match a model label by accident. A graph without MIDs is returned as it is.
    """
    from mlattack.graph import LabelGraph

    node_mids = graph.metadata.get("mids")
    if not isinstance(node_mids, Mapping) or not node_mids:
        return graph
    renamed = {
        name: mid_to_label.get(node_mids[name], node_mids[name]) if name in node_mids else name
        for name in graph.names
    }
    edges = [(renamed[graph.names[p]], renamed[graph.names[c]]) for p, c in graph.edges.tolist()]
    metadata: dict[str, Any] = {}
    for key, value in graph.metadata.items():
        if isinstance(value, Mapping) and set(value) <= set(renamed):  # per-node entries
            metadata[key] = {renamed[name]: entry for name, entry in value.items()}
        elif key == "part_edges":
            metadata[key] = [[renamed[parent], renamed[child]] for parent, child in value]
        else:
            metadata[key] = value
    return LabelGraph([renamed[name] for name in graph.names], edges, metadata=metadata)


__all__ = [
    "CLASS_LIST_KEYS",
    "check_mids",
    "checkpoint_mids",
    "is_mid",
    "model_mids",
    "names_for_mids",
    "read_mid_list",
    "relabel_graph_by_mid",
]
