"""Label graphs: a DAG over the labels of a multi-label classifier, and the semantic
consistency rules that GMLA's consistent target set is built on (DESIGN.md §3.1).

A :class:`LabelGraph` stores its structure as CSR index arrays (``parent -> children`` and
``child -> parents``).  Every batched query works on *(image, label)* pairs gathered through those
arrays with NumPy, so its cost grows with the number of labels touched, never with a Python walk
per image.

JSON schema (version 1)::

    {"schema": "mlattack.label_graph", "version": 1,
     "names": ["vehicle", "car", ...],            # label order = classifier output order
     "edges": [["vehicle", "car"], ...],           # (parent, child), by name (indices also accepted)
     "metadata": {...}}                             # free-form, JSON-able
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from scipy import sparse

__all__ = ["JSON_SCHEMA", "JSON_VERSION", "LabelGraph"]

JSON_SCHEMA = "mlattack.label_graph"
JSON_VERSION = 1

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ArrayOrTensor = BoolArray | torch.Tensor
Direction = Literal["off", "on"]


def _gather_neighbours(
    indptr: IntArray, indices: IntArray, labels: IntArray
) -> tuple[IntArray, IntArray]:
    """For each entry of ``labels``, list its CSR neighbours.

    Returns ``(owner, neighbour)``: ``neighbour[k]`` is a neighbour of ``labels[owner[k]]``;
    entries of one owner are contiguous and in ascending owner order.
    """
    starts = indptr[labels]
    counts = indptr[labels + 1] - starts
    owner = np.repeat(np.arange(labels.size, dtype=np.int64), counts)
    # position of each gathered entry inside ``indices``: its owner's start plus its rank
    first_slot = np.cumsum(counts) - counts
    positions = np.arange(owner.size, dtype=np.int64) + np.repeat(starts - first_slot, counts)
    return owner, indices[positions]


def _segment_any(owner: IntArray, values: BoolArray, n_segments: int) -> BoolArray:
    """``out[s]`` is True when some entry of segment ``s`` has a True value."""
    return np.bincount(owner[values], minlength=n_segments) > 0


class _BatchIO:
    """Converts a user's bool array/tensor to NumPy and the answer back to the same type."""

    def __init__(self, reference: Any, name: str) -> None:
        self.device: torch.device | None = (
            reference.device if isinstance(reference, torch.Tensor) else None
        )
        self.name = name

    def back(self, result: np.ndarray) -> ArrayOrTensor:
        if self.device is None:
            return result
        return torch.from_numpy(np.ascontiguousarray(result)).to(self.device)


def _to_bool_numpy(value: Any, name: str) -> BoolArray:
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray):
        array = value
    else:
        raise TypeError(
            f"{name} must be a bool torch.Tensor or numpy array, got {type(value).__name__}"
        )
    if array.dtype == np.bool_:
        return array
    if np.issubdtype(array.dtype, np.integer) and np.isin(array, (0, 1)).all():
        return array.astype(np.bool_)
    raise TypeError(f"{name} must hold booleans (or 0/1 integers), got dtype {array.dtype}")


class LabelGraph:
    """A directed acyclic graph over label names (edges point parent -> child).

    Args:
        names: unique label names, in the order of the classifier's outputs.
        edges: ``(parent, child)`` pairs, each end a label name or an index into ``names``.
            Repeated edges are merged.
        metadata: free-form JSON-able information (source, synsets, MIDs, ...).

    Raises:
        ValueError: for a duplicate or empty name, an unknown name, an index out of range, a
            self-loop, or a cycle (the message lists the cycle's labels).
    """

    def __init__(
        self,
        names: Sequence[str],
        edges: Iterable[tuple[str | int, str | int]] = (),
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(names, str):
            raise TypeError("names must be a sequence of label names, not a single string")
        names_tuple = tuple(names)
        for position, name in enumerate(names_tuple):
            if not isinstance(name, str):
                raise TypeError(
                    f"label name at position {position} must be a str, got {type(name).__name__}"
                )
            if not name:
                raise ValueError(f"label name at position {position} is empty")
        self._index: dict[str, int] = {}
        for position, name in enumerate(names_tuple):
            if name in self._index:
                raise ValueError(
                    f"duplicate label name {name!r} (positions {self._index[name]} and {position})"
                )
            self._index[name] = position
        self._names = names_tuple
        self.metadata: dict[str, Any] = dict(metadata) if metadata is not None else {}

        edge_list: list[tuple[int, int]] = []
        for edge in edges:
            if len(edge) != 2:
                raise ValueError(f"edge {edge!r} is not a (parent, child) pair")
            parent, child = self._resolve(edge[0]), self._resolve(edge[1])
            if parent == child:
                raise ValueError(f"self-loop on label {names_tuple[parent]!r}")
            edge_list.append((parent, child))
        n = len(names_tuple)
        if edge_list:
            keys = np.unique(np.array(edge_list, dtype=np.int64) @ np.array([n, 1]))
            self._edges = np.stack([keys // n, keys % n], axis=1).astype(np.int64)
        else:
            self._edges = np.zeros((0, 2), dtype=np.int64)
        self._edges.setflags(write=False)
        self._child_ptr, self._child_idx = self._csr(self._edges[:, 0], self._edges[:, 1])
        self._parent_ptr, self._parent_idx = self._csr(self._edges[:, 1], self._edges[:, 0])
        self._depth = self._longest_path_depths()

    # ------------------------------------------------------------------ construction helpers
    def _csr(self, rows: IntArray, cols: IntArray) -> tuple[IntArray, IntArray]:
        order = np.lexsort((cols, rows))
        indptr = np.zeros(len(self._names) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(self._names)), out=indptr[1:])
        indices = cols[order].astype(np.int64)
        indptr.setflags(write=False)
        indices.setflags(write=False)
        return indptr, indices

    def _longest_path_depths(self) -> IntArray:
        """Peel the DAG layer by layer (Kahn); a label's layer is its longest path from a root."""
        n = len(self._names)
        depth = np.zeros(n, dtype=np.int64)
        in_degree = np.diff(self._parent_ptr).copy()
        layer = np.flatnonzero(in_degree == 0)
        level = 0
        peeled = 0
        while layer.size:
            depth[layer] = level
            peeled += layer.size
            _, children = _gather_neighbours(self._child_ptr, self._child_idx, layer)
            np.subtract.at(in_degree, children, 1)
            candidates = np.unique(children)
            layer = candidates[in_degree[candidates] == 0]
            level += 1
        if peeled < n:
            raise ValueError(f"the label graph has a cycle: {self._describe_cycle(in_degree)}")
        depth.setflags(write=False)
        return depth

    def _describe_cycle(self, in_degree: IntArray) -> str:
        """Walk parents among the labels Kahn could not peel until one repeats."""
        unpeeled = in_degree > 0
        node = int(np.flatnonzero(unpeeled)[0])
        seen: dict[int, int] = {}
        path: list[int] = []
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            parents = self._parent_idx[self._parent_ptr[node] : self._parent_ptr[node + 1]]
            node = int(parents[unpeeled[parents]][0])
        cycle = path[seen[node] :][::-1]  # walked child -> parent; print parent -> child
        return " -> ".join(repr(self._names[i]) for i in [*cycle, cycle[0]])

    def _resolve(self, label: str | int | np.integer) -> int:
        if isinstance(label, str):
            try:
                return self._index[label]
            except KeyError:
                raise ValueError(f"unknown label {label!r}") from None
        if isinstance(label, bool) or not isinstance(label, int | np.integer):
            raise TypeError(f"a label must be a name or an index, got {label!r}")
        if not 0 <= int(label) < len(self._names):
            raise ValueError(
                f"label index {int(label)} out of range for a graph of {len(self._names)} labels"
            )
        return int(label)

    # ------------------------------------------------------------------ structure
    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def edges(self) -> IntArray:
        """``int64 [E, 2]`` (parent, child) index pairs, deduplicated and sorted."""
        return self._edges

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        source = self.metadata.get("source")
        extra = f", source={source!r}" if source is not None else ""
        return f"LabelGraph({len(self)} labels, {len(self._edges)} edges{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelGraph):
            return NotImplemented
        return self._names == other._names and np.array_equal(self._edges, other._edges)

    __hash__ = None  # type: ignore[assignment]

    def index(self, name: str) -> int:
        """Position of label ``name``; ``ValueError`` naming it when unknown."""
        if not isinstance(name, str):
            raise TypeError(f"index() takes a label name, got {name!r}")
        return self._resolve(name)

    def parents(self, label: str | int) -> IntArray:
        i = self._resolve(label)
        return self._parent_idx[self._parent_ptr[i] : self._parent_ptr[i + 1]].copy()

    def children(self, label: str | int) -> IntArray:
        i = self._resolve(label)
        return self._child_idx[self._child_ptr[i] : self._child_ptr[i + 1]].copy()

    def ancestors(self, label: str | int) -> IntArray:
        """All labels with a path to ``label`` (itself excluded), ascending."""
        return self._reach(self._resolve(label), self._parent_ptr, self._parent_idx)

    def descendants(self, label: str | int) -> IntArray:
        """All labels reachable from ``label`` (itself excluded), ascending."""
        return self._reach(self._resolve(label), self._child_ptr, self._child_idx)

    def _reach(self, start: int, indptr: IntArray, indices: IntArray) -> IntArray:
        seen = np.zeros(len(self), dtype=np.bool_)
        frontier = np.array([start], dtype=np.int64)
        while frontier.size:
            _, nxt = _gather_neighbours(indptr, indices, frontier)
            nxt = np.unique(nxt[~seen[nxt]])
            seen[nxt] = True
            frontier = nxt
        return np.flatnonzero(seen).astype(np.int64)

    @property
    def roots(self) -> IntArray:
        """Labels without parents."""
        return np.flatnonzero(np.diff(self._parent_ptr) == 0).astype(np.int64)

    @property
    def leaves(self) -> IntArray:
        """Labels without children."""
        return np.flatnonzero(np.diff(self._child_ptr) == 0).astype(np.int64)

    def depth(self, label: str | int) -> int:
        """Length of the longest path from a root to ``label`` (0 for roots)."""
        return int(self._depth[self._resolve(label)])

    @property
    def depths(self) -> IntArray:
        """:meth:`depth` of every label, ``int64 [C]``."""
        return self._depth

    def adjacency(self) -> sparse.csr_matrix:
        """``C x C`` SciPy CSR matrix, entry ``(p, c)`` is 1 for each edge ``p -> c``."""
        n = len(self)
        data = np.ones(self._child_idx.size, dtype=np.int8)
        return sparse.csr_matrix((data, self._child_idx, self._child_ptr), shape=(n, n))

    def subgraph(self, labels: Sequence[str | int]) -> LabelGraph:
        """Graph induced on ``labels`` (in the given order).

        A path through removed labels is contracted: its nearest kept ancestor becomes the
        parent.  Per-label mappings in ``metadata`` (dicts keyed by label names) are
        restricted to the kept labels; other metadata is copied.
        """
        kept = [self._resolve(label) for label in labels]
        if len(set(kept)) != len(kept):
            duplicates = sorted({self._names[i] for i in kept if kept.count(i) > 1})
            raise ValueError(f"subgraph labels repeat: {duplicates}")
        is_kept = np.zeros(len(self), dtype=np.bool_)
        is_kept[kept] = True
        new_edges: list[tuple[str, str]] = []
        for parent in kept:
            # descend through removed labels only; a kept label reached becomes a child
            seen = np.zeros(len(self), dtype=np.bool_)
            frontier = np.array([parent], dtype=np.int64)
            while frontier.size:
                _, nxt = _gather_neighbours(self._child_ptr, self._child_idx, frontier)
                nxt = np.unique(nxt[~seen[nxt]])
                seen[nxt] = True
                new_edges.extend((self._names[parent], self._names[c]) for c in nxt[is_kept[nxt]])
                frontier = nxt[~is_kept[nxt]]
        kept_names = {self._names[i] for i in kept}
        metadata: dict[str, Any] = {}
        for key, value in self.metadata.items():
            if isinstance(value, Mapping) and value and set(value) <= set(self._names):
                metadata[key] = {k: copy.deepcopy(v) for k, v in value.items() if k in kept_names}
            else:
                metadata[key] = copy.deepcopy(value)
        return LabelGraph([self._names[i] for i in kept], new_edges, metadata=metadata)

    # ------------------------------------------------------------------ batch input checks
    def _check_prediction(self, pred: Any, name: str = "pred") -> BoolArray:
        array = _to_bool_numpy(pred, name)
        if array.ndim == 0 or array.shape[-1] != len(self):
            raise ValueError(
                f"{name} must have shape [..., {len(self)}] (one entry per label), "
                f"got {tuple(array.shape)}"
            )
        return array

    def _check_same_shape(self, value: Any, name: str, shape: tuple[int, ...]) -> BoolArray:
        array = _to_bool_numpy(value, name)
        if tuple(array.shape) != shape:
            raise ValueError(
                f"{name} must have the prediction's shape {shape}, got {tuple(array.shape)}"
            )
        return array

    # ------------------------------------------------------------------ consistency
    def violations(self, pred: ArrayOrTensor) -> ArrayOrTensor:
        """``bool [..., C]``: label ``c`` is on and (it has parents, none on) or (it has
        children, none on)."""
        io = _BatchIO(pred, "pred")
        on = self._check_prediction(pred)
        flat = on.reshape(-1, len(self))
        return io.back(self._violations_flat(flat).reshape(on.shape))

    def _violations_flat(self, on: BoolArray) -> BoolArray:
        n_labels = len(self)
        images, labels = np.nonzero(on)
        on_flat = on.reshape(-1)
        result = np.zeros(on.shape, dtype=np.bool_)
        has_parents = np.diff(self._parent_ptr)[labels] > 0
        has_children = np.diff(self._child_ptr)[labels] > 0
        owner, parent = _gather_neighbours(self._parent_ptr, self._parent_idx, labels)
        parent_on = _segment_any(owner, on_flat[images[owner] * n_labels + parent], labels.size)
        owner, child = _gather_neighbours(self._child_ptr, self._child_idx, labels)
        child_on = _segment_any(owner, on_flat[images[owner] * n_labels + child], labels.size)
        bad = (has_parents & ~parent_on) | (has_children & ~child_on)
        result[images[bad], labels[bad]] = True
        return result

    def is_consistent(
        self, pred: ArrayOrTensor, around: ArrayOrTensor | None = None
    ) -> ArrayOrTensor:
        """``bool [...]``: no violation (:meth:`violations`) among all labels, or, when
        ``around`` (a label mask shaped like ``pred``) is given, among those labels plus all
        their ancestors and descendants."""
        io = _BatchIO(pred, "pred")
        on = self._check_prediction(pred)
        violations = self._violations_flat(on.reshape(-1, len(self)))
        if around is not None:
            region = self._check_same_shape(around, "around", tuple(on.shape))
            violations &= self._closure_region(region.reshape(-1, len(self)))
        result = ~violations.any(axis=-1)
        return io.back(result.reshape(on.shape[:-1]))

    def _closure_region(self, mask: BoolArray) -> BoolArray:
        """``mask`` plus all ancestors and descendants of its labels, per image."""
        n_labels = len(self)
        region = mask.copy()
        region_flat = region.reshape(-1)
        for indptr, indices in (
            (self._parent_ptr, self._parent_idx),
            (self._child_ptr, self._child_idx),
        ):
            images, labels = np.nonzero(mask)
            while labels.size:
                owner, nxt = _gather_neighbours(indptr, indices, labels)
                keys = np.unique(images[owner] * n_labels + nxt)
                keys = keys[~region_flat[keys]]
                region_flat[keys] = True
                images, labels = np.divmod(keys, n_labels)
        return region

    # ------------------------------------------------------------------ consistent target set
    def consistent_target_set(
        self,
        pred: ArrayOrTensor,
        targets: ArrayOrTensor | Sequence[str | int],
        *,
        direction: Direction = "off",
        logits: ArrayOrTensor | None = None,
    ) -> ArrayOrTensor:
        """The consistent target set ``Psi`` of ``targets`` (``Omega``) on prediction ``pred``.

        ``pred``: ``bool [B, C]`` or ``[C]``; ``targets``: a mask of the same shape, or (for a
        single ``[C]`` prediction) a sequence of label names/indices.  Returns a mask of
        ``pred``'s shape and type (torch in -> torch out on the same device).

        ``direction="off"`` (every target on in ``pred``): ``Psi`` is the least set containing
        the targets and closed under

        * *down*: an on child ``c`` of a member joins when every parent of ``c`` is off or in
          ``Psi``;
        * *up*: an on parent ``p`` of a member joins when every child of ``p`` is off or in
          ``Psi``.

        The rules are monotone, so the closure is unique; it is computed for the whole batch
        at once, frontier by frontier.  Labels not reachable this way are never touched, even
        where the clean prediction is inconsistent.

        ``direction="on"`` (every target off in ``pred``), the mirror image:

        * *up*: a member with parents, none of them on in ``pred`` or a target, takes all its
          parents (so, in a tree, every off ancestor up to the first on one joins);
        * *down*: a target (or a label that joined this way) with children, none of them on
          in ``pred``, a target or an ancestor that joined, takes its child with the highest
          logit (ties: the lowest index).  ``logits`` (``[B, C]`` like ``pred``) are required
          then.

        Raises:
            ValueError: wrong shapes, a target not on (``"off"``) / already on (``"on"``)
                (naming the image and label), a label out of range, or logits missing when
                ``"on"`` needs them.
        """
        if direction not in ("off", "on"):
            raise ValueError(f"direction must be 'off' or 'on', got {direction!r}")
        io = _BatchIO(pred, "pred")
        on = self._check_prediction(pred)
        if on.ndim > 2:
            raise ValueError(f"pred must have shape [B, {len(self)}] or [{len(self)}], got {on.shape}")
        target_mask = self._target_mask(targets, tuple(on.shape))
        on2 = np.ascontiguousarray(on.reshape(-1, len(self)))
        target2 = np.ascontiguousarray(target_mask.reshape(-1, len(self)))
        conflict = (target2 & ~on2) if direction == "off" else (target2 & on2)
        if conflict.any():
            image, label = (int(v) for v in np.argwhere(conflict)[0])
            where = f"image {image}, " if on.ndim == 2 else ""
            state = "not present (off)" if direction == "off" else "already present (on)"
            raise ValueError(
                f"target {where}label {self._names[label]!r} is {state} in pred; "
                f"direction={direction!r} needs every target {'on' if direction == 'off' else 'off'}"
            )
        if direction == "off":
            psi = self._turn_off_closure(on2, target2)
        else:
            logit_values = None
            if logits is not None:
                logit_values = self._check_logits(logits, tuple(on.shape))
                logit_values = logit_values.reshape(-1, len(self))
            psi = self._turn_on_closure(on2, target2, logit_values, batched=on.ndim == 2)
        return io.back(psi.reshape(on.shape))

    def _target_mask(
        self, targets: ArrayOrTensor | Sequence[str | int], shape: tuple[int, ...]
    ) -> BoolArray:
        if isinstance(targets, torch.Tensor | np.ndarray):
            return self._check_same_shape(targets, "targets", shape)
        if isinstance(targets, str) or not isinstance(targets, Sequence):
            raise TypeError(
                "targets must be a bool mask shaped like pred or a sequence of label names/indices"
            )
        if len(shape) != 1:
            raise ValueError(
                f"targets given as label names/indices need a single [C] prediction, got {shape}"
            )
        mask = np.zeros(shape, dtype=np.bool_)
        mask[[self._resolve(label) for label in targets]] = True
        return mask

    def _check_logits(self, logits: Any, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
        if isinstance(logits, torch.Tensor):
            values = logits.detach().cpu().to(torch.float64).numpy()
        elif isinstance(logits, np.ndarray):
            values = logits.astype(np.float64)
        else:
            raise TypeError(f"logits must be a tensor or numpy array, got {type(logits).__name__}")
        if tuple(values.shape) != shape:
            raise ValueError(f"logits must have the prediction's shape {shape}, got {values.shape}")
        return values

    def _turn_off_closure(self, on: BoolArray, targets: BoolArray) -> BoolArray:
        n_labels = len(self)
        psi = targets.copy()
        psi_flat = psi.reshape(-1)
        # on and not (yet) in Psi: the labels that may still join, and that block a join
        remaining_flat = (on & ~targets).reshape(-1)
        images, labels = np.nonzero(targets)
        while labels.size:
            # candidates: on, not in Psi, and next to a label that just joined
            owner_c, child = _gather_neighbours(self._child_ptr, self._child_idx, labels)
            owner_p, parent = _gather_neighbours(self._parent_ptr, self._parent_idx, labels)
            keys = np.concatenate(
                (images[owner_c] * n_labels + child, images[owner_p] * n_labels + parent)
            )
            keys = np.unique(keys[remaining_flat[keys]])
            if not keys.size:
                break
            cand_images, cand_labels = np.divmod(keys, n_labels)
            n_cand = keys.size
            owner, parent = _gather_neighbours(self._parent_ptr, self._parent_idx, cand_labels)
            parent_keys = cand_images[owner] * n_labels + parent
            down = _segment_any(owner, psi_flat[parent_keys], n_cand) & ~_segment_any(
                owner, remaining_flat[parent_keys], n_cand
            )
            owner, child = _gather_neighbours(self._child_ptr, self._child_idx, cand_labels)
            child_keys = cand_images[owner] * n_labels + child
            up = _segment_any(owner, psi_flat[child_keys], n_cand) & ~_segment_any(
                owner, remaining_flat[child_keys], n_cand
            )
            joined = keys[down | up]
            psi_flat[joined] = True
            remaining_flat[joined] = False
            images, labels = np.divmod(joined, n_labels)
        return psi

    def _turn_on_closure(
        self,
        on: BoolArray,
        targets: BoolArray,
        logits: npt.NDArray[np.float64] | None,
        *,
        batched: bool,
    ) -> BoolArray:
        n_labels = len(self)
        psi = targets.copy()
        psi_flat = psi.reshape(-1)
        # the support that exists whatever the closure adds: on labels and targets
        supported_flat = (on | targets).reshape(-1)

        images, labels = np.nonzero(targets)
        while labels.size:  # up: unsupported members take all their parents
            owner, parent = _gather_neighbours(self._parent_ptr, self._parent_idx, labels)
            parent_keys = images[owner] * n_labels + parent
            unsupported = ~_segment_any(owner, supported_flat[parent_keys], labels.size)
            keys = np.unique(parent_keys[unsupported[owner]])
            keys = keys[~psi_flat[keys]]
            psi_flat[keys] = True
            images, labels = np.divmod(keys, n_labels)

        support_below_flat = supported_flat | psi_flat  # fixed before the downward picks
        images, labels = np.nonzero(targets)
        while labels.size:  # down: members without an on child take their best child
            owner, child = _gather_neighbours(self._child_ptr, self._child_idx, labels)
            child_keys = images[owner] * n_labels + child
            has_children = np.diff(self._child_ptr)[labels] > 0
            needy = has_children & ~_segment_any(owner, support_below_flat[child_keys], labels.size)
            if not needy.any():
                break
            if logits is None:
                first = int(np.flatnonzero(needy)[0])
                where = f" (image {images[first]})" if batched else ""
                raise ValueError(
                    f"turning on label {self._names[labels[first]]!r}{where} needs one of its "
                    "children on, and none is: pass logits to choose the child"
                )
            pick = needy[owner]
            owner, child, child_keys = owner[pick], child[pick], child_keys[pick]
            scores = logits.reshape(-1)[child_keys]
            order = np.lexsort((child, -scores, owner))
            owner_sorted = owner[order]
            first_of_owner = np.ones(order.size, dtype=np.bool_)
            first_of_owner[1:] = owner_sorted[1:] != owner_sorted[:-1]
            keys = np.unique(child_keys[order[first_of_owner]])
            keys = keys[~psi_flat[keys]]
            psi_flat[keys] = True
            images, labels = np.divmod(keys, n_labels)
        return psi

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> dict[str, Any]:
        """The versioned JSON document (see the module docstring)."""
        return {
            "schema": JSON_SCHEMA,
            "version": JSON_VERSION,
            "names": list(self._names),
            "edges": [[self._names[p], self._names[c]] for p, c in self._edges.tolist()],
            "metadata": copy.deepcopy(self.metadata),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabelGraph:
        """Rebuild a graph from :meth:`to_json`'s document (validated)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a label graph document must be a JSON object, got {type(data).__name__}")
        if data.get("schema") != JSON_SCHEMA:
            raise ValueError(f"key 'schema' must be {JSON_SCHEMA!r}, got {data.get('schema')!r}")
        if data.get("version") != JSON_VERSION:
            raise ValueError(
                f"unsupported label graph schema version {data.get('version')!r} "
                f"(this mlattack reads version {JSON_VERSION})"
            )
        names = data.get("names")
        if not isinstance(names, list):
            raise ValueError("key 'names' must be a list of label names")
        edges = data.get("edges", [])
        if not isinstance(edges, list) or not all(
            isinstance(e, list | tuple) and len(e) == 2 for e in edges
        ):
            raise ValueError("key 'edges' must be a list of [parent, child] pairs")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, Mapping):
            raise ValueError("key 'metadata' must be a JSON object")
        return cls(names, [(e[0], e[1]) for e in edges], metadata=metadata)

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LabelGraph:
        """Read a graph saved by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"label graph file {str(path)!r} does not exist") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"label graph file {str(path)!r} is not valid JSON: {error}") from None
        try:
            return cls.from_json(data)
        except (ValueError, TypeError) as error:
            raise ValueError(f"label graph file {str(path)!r}: {error}") from None

    # ------------------------------------------------------------------ sources
    @classmethod
    def from_openimages(
        cls,
        hierarchy_json: str | Path,
        class_descriptions_csv: str | Path | None = None,
        *,
        include_parts: bool = False,
    ) -> LabelGraph:
        """The OpenImages box hierarchy; see
        :func:`mlattack.graph_sources.openimages.load_openimages_graph`."""
        from mlattack.graph_sources.openimages import load_openimages_graph

        return load_openimages_graph(
            hierarchy_json, class_descriptions_csv, include_parts=include_parts
        )

    @classmethod
    def from_wordnet(cls, labels: Sequence[str], **kwargs: Any) -> LabelGraph:
        """A WordNet hierarchy over ``labels``; see
        :func:`mlattack.graph_sources.wordnet.build_wordnet_graph`."""
        from mlattack.graph_sources.wordnet import build_wordnet_graph

        return build_wordnet_graph(labels, **kwargs)

    @classmethod
    def builtin(cls, name: str) -> LabelGraph:
        """A packaged graph (``"voc"``, ``"nus-wide"``); see
        :func:`mlattack.graph_sources.builtin.load_builtin`."""
        from mlattack.graph_sources.builtin import load_builtin

        return load_builtin(name)
