"""Label spaces: how a dataset's annotations become a label vector, closed upward through a graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import torch
from scipy import sparse

from mlattack._validation import check_label_name

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

GraphSpec = Union["LabelGraph", str, Path, None]


def resolve_graph(graph: GraphSpec) -> LabelGraph | None:
    """None, or the graph :func:`mlattack.graph_sources.load_graph` reads from ``graph`` (a
    LabelGraph, ``"builtin:NAME"``, ``"label-set:NAME"``, ``"openimages:DIR"`` or a JSON path)."""
    if graph is None:
        return None
    from mlattack.graph_sources import load_graph

    return load_graph(graph)


@dataclass(frozen=True)
class LabelSpace:
    """The output columns of a dataset and how each annotation name turns them on.

    ``annotation_names`` are the names annotations may use (the graph's labels when a graph is given,
    else the dataset's own classes plus any requested ``label_names``); ``names`` are the output columns
    (in order); ``graph`` is the graph over ``names`` (None without one). An annotation turns on its own
    column and the columns of all its ancestors, so every label vector is closed upward.
    """

    annotation_names: tuple[str, ...]
    names: tuple[str, ...]
    graph: LabelGraph | None
    closure: np.ndarray  # bool [len(annotation_names), len(names)]
    _rows: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # frozen dataclass: the lookup table is derived once, here
        object.__setattr__(self, "_rows", {n: i for i, n in enumerate(self.annotation_names)})

    def index(self, name: str, *, source: str) -> int:
        """Row of ``closure`` for an annotation; ``ValueError`` naming ``source`` when unknown."""
        row = self._rows.get(name)
        if row is None:
            where = "the label graph" if self.graph is not None else "the dataset's label set"
            raise ValueError(f"label {name!r} in {source} is not in {where}")
        return row

    def knows(self, name: str) -> bool:
        return name in self._rows

    def encode(self, items: Sequence[Sequence[int]]) -> torch.Tensor:
        """Float 0/1 label matrix ``[N, C]`` from each item's annotation rows (see :meth:`index`)."""
        rows = np.repeat(np.arange(len(items)), [len(item) for item in items])
        cols = np.fromiter((a for item in items for a in item), dtype=np.int64, count=len(rows))
        return self.encode_matrix(
            sparse.csr_matrix(
                (np.ones(len(rows), dtype=np.float32), (rows, cols)),
                shape=(len(items), len(self.annotation_names)),
            )
        )

    def encode_matrix(self, present: np.ndarray | sparse.spmatrix) -> torch.Tensor:
        """Float 0/1 label matrix ``[N, C]`` from a 0/1 matrix over ``annotation_names``."""
        hits = sparse.csr_matrix(present, dtype=np.float32) @ self.closure.astype(np.float32)
        return torch.from_numpy(np.asarray(hits > 0, dtype=np.float32))


def make_label_space(
    native_names: Sequence[str],
    *,
    label_names: Sequence[str] | None = None,
    graph: LabelGraph | None = None,
) -> LabelSpace:
    """The label space of a dataset whose own classes are ``native_names``.

    Output columns are ``label_names`` when given, else the graph's labels, else ``native_names``.
    With a graph, every output label must be one of its nodes (the returned graph is the induced
    subgraph when they are not all of them, in the order given). Every name is checked by
    :func:`~mlattack._validation.check_label_name` (at most
    :data:`~mlattack._validation.MAX_LABEL_NAME_LENGTH` characters, valid Unicode).
    """
    for position, name in enumerate(native_names):
        check_label_name(name, f"dataset label {position}")
    if label_names is not None:
        names = tuple(check_label_name(n, f"label_names[{i}]") for i, n in enumerate(label_names))
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"label_names has duplicates: {duplicates}")
        if not names:
            raise ValueError("label_names is empty")
    if graph is None:
        annotation_names = tuple(dict.fromkeys([*native_names, *(label_names or ())]))
        names = tuple(label_names) if label_names is not None else annotation_names
        column = {n: i for i, n in enumerate(names)}
        closure = np.zeros((len(annotation_names), len(names)), dtype=bool)
        for row, name in enumerate(annotation_names):
            if name in column:
                closure[row, column[name]] = True
        return LabelSpace(annotation_names, names, None, closure)

    annotation_names = tuple(graph.names)
    known = set(annotation_names)
    if label_names is None:
        names = annotation_names
        sub = graph
    else:
        outside = [n for n in names if n not in known]
        if outside:
            raise ValueError(f"labels not in the label graph: {outside}")
        sub = graph if names == annotation_names else graph.subgraph(list(names))
    column = {n: i for i, n in enumerate(names)}
    closure = np.zeros((len(annotation_names), len(names)), dtype=bool)
    for row in range(len(annotation_names)):
        for node in (row, *(int(a) for a in graph.ancestors(row))):
            target = column.get(annotation_names[node])
            if target is not None:
                closure[row, target] = True
    return LabelSpace(annotation_names, names, sub, closure)
