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
import sys
from collections.abc import Iterable, Mapping, Sequence, Set
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from scipy import sparse

from mlattack._validation import check_bool

__all__ = ["DIRECTIONS", "JSON_SCHEMA", "JSON_VERSION", "LabelGraph"]

JSON_SCHEMA = "mlattack.label_graph"
JSON_VERSION = 1

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ArrayOrTensor = BoolArray | torch.Tensor
Direction = Literal["off", "on", "mixed"]
#: Values of ``consistent_target_set(direction=...)``.
DIRECTIONS: tuple[Direction, ...] = ("off", "on", "mixed")


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

    def __init__(self, reference: Any) -> None:
        self.device: torch.device | None = (
            reference.device if isinstance(reference, torch.Tensor) else None
        )

    def back(self, result: np.ndarray) -> ArrayOrTensor:
        if self.device is None:
            return result
        # ascontiguousarray turns a 0-d answer ([C] in -> scalar out) into shape [1]; keep it 0-d
        return torch.from_numpy(np.ascontiguousarray(result).reshape(result.shape)).to(self.device)


def read_json_file(path: Path, what: str) -> Any:
    """Parse the JSON file ``path``; a missing, malformed or too deeply nested file raises
    ``ValueError`` naming it.

    ``what`` says what the file is, e.g. ``"label graph file"``, for the message.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{what} {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {error}") from None
    except RecursionError:  # the parser recurses once per nesting level
        raise ValueError(
            f"{what} {str(path)!r} is nested too deeply to be parsed (more than about "
            f"{sys.getrecursionlimit()} levels)"
        ) from None
    except OSError as error:  # a directory, no permission, ...
        raise ValueError(f"{what} {str(path)!r} cannot be read: {error.strerror}") from None


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
    if np.issubdtype(array.dtype, np.integer):
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} holds integers other than 0 and 1; pass a bool mask")
        return array.astype(np.bool_)
    raise TypeError(f"{name} must hold booleans (or 0/1 integers), got dtype {array.dtype}")


def _short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (a user's object may be huge or deep)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ordered_items(value: Any, name: str, what: str) -> tuple[Any, ...]:
    """The items of an ordered collection (a sequence or a 1-D array), else ``TypeError``.

    Sets and mappings are refused: their order is not the user's, and label order is the
    classifier's output order.
    """
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise TypeError(f"{name} must be a 1-D array of {what}, got shape {value.shape}")
        return tuple(value.tolist())
    if isinstance(value, str | bytes):
        raise TypeError(f"{name} must be a sequence of {what}, not a single string")
    if isinstance(value, Set | Mapping) or not isinstance(value, Iterable):
        raise TypeError(
            f"{name} must be a sequence (list or tuple) of {what}, got "
            f"{type(value).__name__}: {_short_repr(value)}"
        )
    return tuple(value)


def _edge_ends(edge: Any, position: int) -> tuple[Any, Any]:
    """``(parent, child)`` of one edge: a list, tuple or 1-D array of two labels."""
    if isinstance(edge, Set | Mapping):
        kind = "a set" if isinstance(edge, Set) else "a mapping"
        raise TypeError(
            f"edge at position {position} is {kind} ({_short_repr(edge)}); give an ordered "
            "(parent, child) pair as a tuple or list"
        )
    # a 2-letter string would otherwise pass as the pair of its letters
    if isinstance(edge, str | bytes) or not isinstance(edge, Sequence | np.ndarray):
        raise ValueError(
            f"edge {_short_repr(edge)} is not a (parent, child) pair (position {position})"
        )
    if len(edge) != 2 or (isinstance(edge, np.ndarray) and edge.ndim != 1):
        raise ValueError(
            f"edge {_short_repr(edge)} is not a (parent, child) pair (position {position})"
        )
    return edge[0], edge[1]


class LabelGraph:
    """A directed acyclic graph over label names (edges point parent -> child).

    Args:
        names: unique label names, in the order of the classifier's outputs.
        edges: ``(parent, child)`` pairs, each end a label name or an index into ``names``.
            Repeated edges are merged.
        metadata: free-form JSON-able information (source, synsets, MIDs, ...).

    Raises:
        TypeError: ``names`` is not an ordered collection of strings (``None``, a number, a
            single string, a set, a mapping), ``edges`` is not an iterable of pairs, an edge is
            an unordered set or a mapping, or an edge end is neither a name nor an integer
            index; the message names the argument and the position.
        ValueError: for a duplicate or empty name, an edge that is not a pair, an unknown name,
            an index out of range, a self-loop, or a cycle (the message lists the cycle's
            labels).
    """

    def __init__(
        self,
        names: Sequence[str],
        edges: Iterable[tuple[str | int, str | int]] = (),
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        names_tuple = _ordered_items(names, "names", "label names")
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
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        self.metadata: dict[str, Any] = dict(metadata) if metadata is not None else {}
        if (
            edges is None
            or isinstance(edges, str | bytes | Mapping)
            or not isinstance(edges, Iterable)
            or (isinstance(edges, np.ndarray) and edges.ndim != 2)
        ):
            raise TypeError(
                "edges must be an iterable of (parent, child) pairs, "
                f"got {type(edges).__name__}: {_short_repr(edges)}"
            )

        edge_list: list[tuple[int, int]] = []
        for position, edge in enumerate(edges):
            ends = _edge_ends(edge, position)
            try:
                parent, child = self._resolve(ends[0]), self._resolve(ends[1])
            except (TypeError, ValueError) as error:
                raise type(error)(f"edge at position {position}: {error}") from None
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
            raise TypeError(f"a label must be a name or an index, got {_short_repr(label)}")
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
        """Same names in the same order and the same edges (metadata is not compared)."""
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
        if isinstance(labels, str):
            raise TypeError(
                "subgraph() takes a sequence of label names/indices, not a single string"
            )
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
        io = _BatchIO(pred)
        on = self._check_prediction(pred)
        return io.back(self._violations_flat(on))

    def _violations_flat(self, on: BoolArray) -> BoolArray:
        on_flat = on.reshape(-1)
        keys = np.flatnonzero(on_flat)
        labels = keys % len(self)
        has_parents = np.diff(self._parent_ptr)[labels] > 0
        has_children = np.diff(self._child_ptr)[labels] > 0
        owner, parent_keys = self._neighbour_keys(keys, labels, self._parent_ptr, self._parent_idx)
        parent_on = _segment_any(owner, on_flat[parent_keys], keys.size)
        owner, child_keys = self._neighbour_keys(keys, labels, self._child_ptr, self._child_idx)
        child_on = _segment_any(owner, on_flat[child_keys], keys.size)
        result = np.zeros(on.shape, dtype=np.bool_)
        result.reshape(-1)[keys[(has_parents & ~parent_on) | (has_children & ~child_on)]] = True
        return result

    @staticmethod
    def _neighbour_keys(
        keys: IntArray, labels: IntArray, indptr: IntArray, indices: IntArray
    ) -> tuple[IntArray, IntArray]:
        """Neighbours of flat *(image, label)* keys ``image * C + label``, as flat keys of the
        same image: ``(owner, neighbour_keys)`` with ``owner`` indexing ``keys``."""
        owner, neighbours = _gather_neighbours(indptr, indices, labels)
        return owner, (keys - labels)[owner] + neighbours

    def is_consistent(
        self, pred: ArrayOrTensor, around: ArrayOrTensor | None = None
    ) -> ArrayOrTensor:
        """``bool [...]``: no violation (:meth:`violations`) among all labels, or, when
        ``around`` (a label mask shaped like ``pred``) is given, among those labels plus all
        their ancestors and descendants."""
        io = _BatchIO(pred)
        on = self._check_prediction(pred)
        violations = self._violations_flat(on)
        if around is not None:
            region = self._check_same_shape(around, "around", tuple(on.shape))
            violations &= self._closure_region(region)
        result = ~violations.any(axis=-1)
        return io.back(np.asarray(result))

    def _closure_region(self, mask: BoolArray) -> BoolArray:
        """``mask`` plus all ancestors and descendants of its labels, per image."""
        region = mask.copy()
        start = np.flatnonzero(mask)
        for indptr, indices in (
            (self._parent_ptr, self._parent_idx),
            (self._child_ptr, self._child_idx),
        ):
            # one visited set per direction: a label's descendants may pass through another
            # masked label's ancestors
            reached = np.zeros(mask.size, dtype=np.bool_)
            self._walk(start, indptr, indices, reached)
            region.reshape(-1)[reached] = True
        return region

    def _walk(
        self,
        start: IntArray,
        indptr: IntArray,
        indices: IntArray,
        seen: BoolArray,
        through: BoolArray | None = None,
    ) -> IntArray:
        """Breadth-first walk over flat keys from ``start`` along one edge direction.

        Marks every key reached in ``seen`` (keys already marked are not entered again) and
        goes on from a reached key only where ``through`` is True (everywhere when None).
        Returns the newly reached keys."""
        found: list[IntArray] = []
        frontier = start
        while frontier.size:
            _, nxt = self._neighbour_keys(frontier, frontier % len(self), indptr, indices)
            nxt = np.unique(nxt[~seen[nxt]])
            seen[nxt] = True
            found.append(nxt)
            frontier = nxt if through is None else nxt[through[nxt]]
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ consistent target set
    def consistent_target_set(
        self,
        pred: ArrayOrTensor,
        targets: ArrayOrTensor | Sequence[str | int],
        *,
        direction: Direction = "off",
        logits: ArrayOrTensor | None = None,
        official_closure: bool = False,
        repair: None = None,
    ) -> ArrayOrTensor:
        """The consistent target set ``Psi`` of ``targets`` (``Omega``) on prediction ``pred``.

        ``pred``: ``bool [B, C]`` or ``[C]``; ``targets``: a mask of the same shape, or (for a
        single ``[C]`` prediction) a sequence of label names/indices.  Returns a mask of
        ``pred``'s shape and type (torch in -> torch out on the same device).

        *Turning off* (the targets that are on in ``pred``): ``Psi`` is the least set
        containing them and closed under

        * *down*: an on child ``c`` of a member joins when every parent of ``c`` is off or in
          ``Psi``;
        * *up*: an on parent ``p`` of a member joins when every child of ``p`` is off or in
          ``Psi``.

        The rules are monotone, so the closure is unique; it is computed for the whole batch
        at once, frontier by frontier.  Labels not reachable this way are never touched, even
        where the clean prediction is inconsistent; where it is locally consistent around the
        targets, turning ``Psi`` off keeps it so.

        *Turning on* (the targets that are off in ``pred``), the mirror image:

        * *up*: a target, or an ancestor that joined, with parents none of which is on in
          ``pred`` or a target, takes all its parents (so, in a tree, every off ancestor up to
          the first on one joins);
        * *down*: a target, or a child that joined this way, with children none of which is on
          in ``pred``, a target or an ancestor that joined, takes its child with the highest
          logit (ties: the lowest index), which its picker supports.  ``logits`` (shaped like
          ``pred``) are required then; they are ignored (but checked) otherwise.

        Both steps read support from sets fixed beforehand, so the result is independent of
        the order labels are visited in, and turning ``Psi`` on leaves the prediction locally
        consistent around the targets wherever it was before.

        Args:
            pred: the clean prediction.
            targets: ``Omega``.
            direction: ``"off"`` requires every target to be on in ``pred`` and ``"on"`` every
                target to be off (each a check of what the caller means); ``"mixed"`` accepts
                both, as the paper defines ``Omega``: ``Psi`` is the union of the turn-off
                closure of the present targets and the turn-on closure of the absent ones.  In
                a mixed set the two closures see each other: a present target gives no support
                to a label turning on, and the labels turning on support their neighbours (and
                are never turned off), so ``pred XOR Psi`` stays consistent around the targets.
                A mixed set whose two halves contradict (turning one target on needs a label
                that turning another off removes) raises ``ValueError``.
            logits: the clean logits, shaped like ``pred``, to pick a child when turning on.
            official_closure: the authors' ``compute_tree_off_loss`` on inconsistent predictions: the
                turn-off search also walks through off labels, so that, besides the rules
                above,

                * an on label with a parent the search walked through (a member, an off
                  ancestor of a member, or an off label below a member reached through off
                  labels) joins when every parent is off or in ``Psi``;
                * an on ancestor of a member joins when every child is off or in ``Psi``.

                On ON labels hanging under an OFF node the search walks through this turns off
                what the plain rules leave on.  Unlike the authors' code it never turns off a
                label that another on parent outside ``Psi`` still supports (DAG-safe), and on a
                globally consistent prediction it gives the plain result.  It only changes the
                turn-off closure.
            repair: the former name of ``official_closure``, refused with a ``TypeError``.

        Raises:
            ValueError: wrong shapes, an unknown ``direction``, a target not on (``"off"``) /
                already on (``"on"``) (naming the image and label), contradicting halves of a
                mixed set, a label out of range, or logits missing or NaN when turning on
                needs them.
            TypeError: masks or logits of the wrong type, ``official_closure`` not a bool,
                ``repair`` given.
        """
        if not isinstance(direction, str) or direction not in DIRECTIONS:
            raise ValueError(
                f"direction must be one of {', '.join(map(repr, DIRECTIONS))}, got {direction!r}"
            )
        if repair is not None:
            raise TypeError(
                "consistent_target_set(repair=...) was renamed official_closure=... (the authors' "
                "closure; 'repair' now names GMLA's repair stage)"
            )
        check_bool(official_closure, "official_closure")
        io = _BatchIO(pred)
        on = self._check_prediction(pred)
        if on.ndim > 2:
            raise ValueError(
                f"pred must have shape [B, {len(self)}] or [{len(self)}], got {on.shape}"
            )
        batched = on.ndim == 2
        target_mask = self._target_mask(targets, tuple(on.shape))
        on_flat = np.ascontiguousarray(on).reshape(-1)
        target_flat = np.ascontiguousarray(target_mask).reshape(-1)
        target_keys = np.flatnonzero(target_flat)
        if logits is not None:
            self._check_logits(logits, tuple(on.shape))
        present = on_flat[target_keys]
        if direction != "mixed":
            wrong = ~present if direction == "off" else present
            if wrong.any():
                image, label = divmod(int(target_keys[np.argmax(wrong)]), len(self))
                where = f"image {image}, " if batched else ""
                if direction == "off":
                    state, rule = "not present (off)", "predicted present"
                    hint = "pass direction='mixed' to turn absent targets on"
                else:
                    state, rule = "already present (on)", "predicted absent"
                    hint = "pass direction='mixed' to turn present targets off"
                raise ValueError(
                    f"target {where}label {self._names[label]!r} is {state} in pred; "
                    f"direction={direction!r} requires every target to be {rule} ({hint})"
                )
        off_keys, on_keys = target_keys[present], target_keys[~present]

        turned_on: BoolArray | None = None
        if on_keys.size:
            logit_flat = None if logits is None else self._logits_numpy(logits)
            if logit_flat is not None and np.isnan(logit_flat).any():
                # NaN would make the highest-logit child pick arbitrary
                image, label = divmod(int(np.argmax(np.isnan(logit_flat))), len(self))
                where = f"image {image}, " if batched else ""
                raise ValueError(f"logits hold NaN ({where}label {self._names[label]!r})")
            on_targets = np.zeros_like(target_flat)
            on_targets[on_keys] = True
            support = on_flat
            if off_keys.size:  # a label being turned off supports nothing turning on
                support = on_flat & ~target_flat
                if logit_flat is not None:  # ... and is never the child picked to turn on
                    logit_flat = np.where(target_flat, -np.inf, logit_flat)
            turned_on = self._turn_on_closure(
                support, on_targets, on_keys, logit_flat, batched=batched
            )
            if off_keys.size:
                self._check_no_contradiction(turned_on & on_flat, batched)

        support_off = on_flat if turned_on is None else on_flat | turned_on
        if official_closure:
            psi = self._repaired_turn_off_closure(on_flat, support_off, off_keys)
        else:
            psi = self._turn_off_closure(on_flat, off_keys, support_off)
        if turned_on is not None:
            if off_keys.size:
                after = ((on_flat & ~psi) | turned_on).reshape(on.shape)
                unsupported = self._violations_flat(after).reshape(-1) & turned_on
                self._check_no_contradiction(unsupported, batched)
            psi |= turned_on
        return io.back(psi.reshape(on.shape))

    def _check_no_contradiction(self, conflict: BoolArray, batched: bool) -> None:
        """A mixed target set whose turn-on half needs what its turn-off half removes."""
        if conflict.any():
            image, label = divmod(int(np.argmax(conflict)), len(self))
            where = f" in image {image}" if batched else ""
            raise ValueError(
                f"direction='mixed': the targets contradict each other{where}: turning the "
                f"absent targets on needs label {self._names[label]!r} on, but turning the "
                "present targets off turns it off; split the target set"
            )

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

    def _check_logits(self, logits: Any, shape: tuple[int, ...]) -> None:
        if not isinstance(logits, torch.Tensor | np.ndarray):
            raise TypeError(f"logits must be a tensor or numpy array, got {type(logits).__name__}")
        if tuple(logits.shape) != shape:
            raise ValueError(
                f"logits must have the prediction's shape {shape}, got {tuple(logits.shape)}"
            )
        if isinstance(logits, torch.Tensor):
            numeric = logits.dtype != torch.bool and not logits.dtype.is_complex
        else:
            numeric = np.issubdtype(logits.dtype, np.floating) or np.issubdtype(
                logits.dtype, np.integer
            )
        if not numeric:
            raise TypeError(f"logits must hold real numbers, got dtype {logits.dtype}")

    @staticmethod
    def _logits_numpy(logits: ArrayOrTensor) -> npt.NDArray[np.floating[Any]]:
        if isinstance(logits, torch.Tensor):
            return logits.detach().float().cpu().numpy().reshape(-1)
        return np.asarray(logits, dtype=np.float64).reshape(-1)

    def _turn_off_closure(
        self, on: BoolArray, target_keys: IntArray, support: BoolArray
    ) -> BoolArray:
        """Least fixed point of the down/up rules over flat *(image, label)* keys.

        ``on`` says which labels may join; ``support`` (``on`` plus, in a mixed set, the labels
        turning on) which neighbours keep a label on.  Each round looks only at the on labels
        next to the labels that joined in the round before; every candidate whose rule holds
        joins at once.  A rule's condition only becomes true when a neighbour joins, so no
        candidate is missed, and since the rules are monotone the order of joining does not
        change the result."""
        psi = np.zeros(on.size, dtype=np.bool_)
        psi[target_keys] = True
        joined = target_keys
        while joined.size:
            labels = joined % len(self)
            _, child_keys = self._neighbour_keys(joined, labels, self._child_ptr, self._child_idx)
            _, parent_keys = self._neighbour_keys(
                joined, labels, self._parent_ptr, self._parent_idx
            )
            keys = np.concatenate((child_keys, parent_keys))
            keys = np.unique(keys[on[keys] & ~psi[keys]])
            if not keys.size:
                break
            labels = keys % len(self)
            down = self._rule_holds(
                keys, labels, self._parent_ptr, self._parent_idx, support, psi, psi
            )
            up = self._rule_holds(keys, labels, self._child_ptr, self._child_idx, support, psi, psi)
            joined = keys[down | up]
            psi[joined] = True
        return psi

    def _repaired_turn_off_closure(
        self, on: BoolArray, support: BoolArray, target_keys: IntArray
    ) -> BoolArray:
        """The turn-off closure with ``repair=True`` (see :meth:`consistent_target_set`).

        Besides ``Psi`` it keeps, per image, the labels the authors' search walks through:
        ``above`` (every strict ancestor of a member, whatever its state) and ``below`` (the
        labels reached downwards from a member through labels that are off), and
        ``passable``: the members plus the off labels of ``above`` and ``below``.  The rules
        only grow with these sets, so the fixed point is unique and order-independent.  A
        condition becomes true only when a parent becomes passable, a child joins, or the
        label becomes an ancestor of a member: those are the candidates of each round.

        The downward walk only enters off labels with an on label below them: the others have
        no on child, so whether they are passable never matters, and skipping them keeps the
        cost near that of the plain closure on sparse predictions."""
        psi = np.zeros(on.size, dtype=np.bool_)
        above = np.zeros_like(psi)
        below = np.zeros_like(psi)
        passable = np.zeros_like(psi)
        psi[target_keys] = True
        passable[target_keys] = True
        off = ~support
        over_on = np.zeros_like(psi)  # strict ancestors of on labels
        self._walk(np.flatnonzero(on), self._parent_ptr, self._parent_idx, over_on)
        descend_through = off & over_on
        joined = target_keys
        while joined.size:
            new_above = self._walk(joined, self._parent_ptr, self._parent_idx, above)
            new_below = self._walk(
                joined, self._child_ptr, self._child_idx, below, through=descend_through
            )
            walked_off = np.concatenate((new_above, new_below))
            walked_off = walked_off[off[walked_off] & ~passable[walked_off]]
            passable[walked_off] = True
            fresh = np.concatenate((joined, walked_off))
            _, child_keys = self._neighbour_keys(
                fresh, fresh % len(self), self._child_ptr, self._child_idx
            )
            _, parent_keys = self._neighbour_keys(
                joined, joined % len(self), self._parent_ptr, self._parent_idx
            )
            keys = np.concatenate((child_keys, parent_keys, new_above))
            keys = np.unique(keys[on[keys] & ~psi[keys]])
            if not keys.size:
                break
            labels = keys % len(self)
            down = self._rule_holds(
                keys, labels, self._parent_ptr, self._parent_idx, support, psi, passable
            )
            up = above[keys] & self._rule_holds(
                keys, labels, self._child_ptr, self._child_idx, support, psi, None
            )
            joined = keys[down | up]
            psi[joined] = True
            passable[joined] = True
        return psi

    def _rule_holds(
        self,
        keys: IntArray,
        labels: IntArray,
        indptr: IntArray,
        indices: IntArray,
        support: BoolArray,
        psi: BoolArray,
        reached: BoolArray | None,
    ) -> BoolArray:
        """Per candidate key: every neighbour is unsupported (off) or in Psi, and some
        neighbour is ``reached`` (skipped when None)."""
        owner, neighbour_keys = self._neighbour_keys(keys, labels, indptr, indices)
        blocking = support[neighbour_keys] & ~psi[neighbour_keys]
        holds = ~_segment_any(owner, blocking, keys.size)
        if reached is not None:
            holds &= _segment_any(owner, reached[neighbour_keys], keys.size)
        return holds

    def _turn_on_closure(
        self,
        on: BoolArray,
        targets: BoolArray,
        target_keys: IntArray,
        logits: npt.NDArray[np.floating[Any]] | None,
        *,
        batched: bool,
    ) -> BoolArray:
        psi = targets.copy()
        keys = target_keys
        while keys.size:  # up: members with no parent on (or a target) take all their parents
            owner, parent_keys = self._neighbour_keys(
                keys, keys % len(self), self._parent_ptr, self._parent_idx
            )
            supported = on[parent_keys] | targets[parent_keys]
            unsupported = ~_segment_any(owner, supported, keys.size)
            keys = np.unique(parent_keys[unsupported[owner]])
            keys = keys[~psi[keys]]
            psi[keys] = True

        # down: fixed support (on labels, targets, the ancestors that joined), so the picks
        # do not depend on each other
        support_below = on | psi
        keys = target_keys
        while keys.size:  # members with children, none supported, take their best child
            labels = keys % len(self)
            owner, child_keys = self._neighbour_keys(keys, labels, self._child_ptr, self._child_idx)
            has_children = np.diff(self._child_ptr)[labels] > 0
            needy = has_children & ~_segment_any(owner, support_below[child_keys], keys.size)
            if not needy.any():
                break
            if logits is None:
                image, label = divmod(int(keys[np.argmax(needy)]), len(self))
                where = f" (image {image})" if batched else ""
                raise ValueError(
                    f"turning on label {self._names[label]!r}{where} needs one of its "
                    "children on, and none is: pass logits to choose the child"
                )
            pick = needy[owner]
            owner, child_keys = owner[pick], child_keys[pick]
            # best child per owner: highest logit, ties to the lowest label index
            order = np.lexsort((child_keys, -logits[child_keys], owner))
            owner_sorted = owner[order]
            first_of_owner = np.ones(order.size, dtype=np.bool_)
            first_of_owner[1:] = owner_sorted[1:] != owner_sorted[:-1]
            keys = np.unique(child_keys[order[first_of_owner]])
            keys = keys[~psi[keys]]
            psi[keys] = True
        return psi

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> dict[str, Any]:
        """The versioned JSON document (see the module docstring)."""
        return {
            "schema": JSON_SCHEMA,
            "version": JSON_VERSION,
            "names": list(self._names),
            "edges": [[self._names[p], self._names[c]] for p, c in self._edges.tolist()],
            "metadata": self._metadata_copy(),
        }

    def _metadata_copy(self) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.metadata)
        except RecursionError:  # deepcopy recurses once (or more) per nesting level
            raise ValueError("the graph's metadata is nested too deeply to be copied") from None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabelGraph:
        """Rebuild a graph from :meth:`to_json`'s document (validated)."""
        if not isinstance(data, Mapping):
            raise TypeError(
                f"a label graph document must be a JSON object, got {type(data).__name__}"
            )
        if data.get("schema") != JSON_SCHEMA:
            raise ValueError(f"key 'schema' must be {JSON_SCHEMA!r}, got {data.get('schema')!r}")
        if isinstance(data.get("version"), bool) or data.get("version") != JSON_VERSION:
            raise ValueError(
                f"unsupported label graph schema version {data.get('version')!r} "
                f"(this mlattack reads version {JSON_VERSION})"
            )
        names = data.get("names")
        if not isinstance(names, list):
            raise ValueError("key 'names' must be a list of label names")
        edges = data.get("edges", [])
        if not isinstance(edges, list):
            raise ValueError("key 'edges' must be a list of [parent, child] pairs")
        for position, edge in enumerate(edges):
            if not isinstance(edge, list | tuple) or len(edge) != 2:
                raise ValueError(
                    f"key 'edges' must be a list of [parent, child] pairs; entry {position} "
                    f"is {_short_repr(edge)}"
                )
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
        data = read_json_file(path, "label graph file")
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
