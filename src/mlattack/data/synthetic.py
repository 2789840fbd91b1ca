"""Synthetic hierarchical scenes: procedurally drawn shapes from a two- or three-level taxonomy.

Every image is a dark, slightly noisy background split into a grid of cells; objects sit in
distinct cells (so they never overlap), each a filled shape in a random bright colour.

The standard scenes use a 2x2 grid with 1-3 objects (up to 4 with the correlated additions) and
sixteen shapes (the leaves) in four groups (the parents):

- ``round``: disc, ring, half_disc, ellipse
- ``angular``: square, frame, diamond, triangle
- ``strokes``: plus, cross, ell, tee
- ``patterns``: checker, hstripes, vstripes, dots

The dense scenes (``dense=True``) use a 3x3 grid with 2-5 objects (up to 6 with the correlated
additions) and a three-level taxonomy of 44 labels: 32 shapes in eight groups (the four above and
``polygons``, ``curves``, ``bars``, ``textures``) under four kinds (``curved``, ``straight``,
``linear``, ``textured``; see ``KINDS``), so that target sets of up to five leaves have eligible
images.

Colour carries no class information, so a model has to learn shapes. Some *unrelated* leaves (from
different groups) co-occur on purpose: for each pair ``(A, B)`` in ``correlated_pairs``, an image that
shows ``A`` also shows ``B`` with probability ``correlation`` - the spurious correlation a trained model
picks up and that semantic-aware attacks have to fight.

Everything is a pure function of ``(seed, split, index)``: random numbers come from a counter-based
hash (SplitMix64) of those three and a slot number, so any image can be drawn alone or in a batch, in
any order, with identical results. Batches are drawn with vectorised torch ops (``render``;
``__getitems__`` lets a ``DataLoader`` use it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mlattack._validation import check_bool, check_int

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph

ShapeMask = Callable[[Tensor, Tensor], Tensor]

GROUPS: dict[str, tuple[str, ...]] = {
    "round": ("disc", "ring", "half_disc", "ellipse"),
    "angular": ("square", "frame", "diamond", "triangle"),
    "strokes": ("plus", "cross", "ell", "tee"),
    "patterns": ("checker", "hstripes", "vstripes", "dots"),
}
#: The dense scenes' extra groups of shapes.
DENSE_GROUPS: dict[str, tuple[str, ...]] = {
    **GROUPS,
    "polygons": ("hexagon", "octagon", "star", "pentagon"),
    "curves": ("crescent", "lens", "quarter_disc", "oval_ring"),
    "bars": ("hbar", "vbar", "slash", "equals"),
    "textures": ("grid", "dstripes", "target", "zigzag"),
}
#: The dense scenes' top level: each kind is the parent of two groups.
KINDS: dict[str, tuple[str, ...]] = {
    "curved": ("round", "curves"),
    "straight": ("angular", "polygons"),
    "linear": ("strokes", "bars"),
    "textured": ("patterns", "textures"),
}
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (
    ("ring", "tee"),
    ("triangle", "checker"),
    ("plus", "ellipse"),
)
SPLITS = {"train": 0, "val": 1, "test": 2}


def _box(u: Tensor, v: Tensor, half: float) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) <= half


def _stripes(w: Tensor, period: float) -> Tensor:
    return torch.remainder(w + 1.0, period) < period / 2


def _polar(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sqrt(u * u + v * v), torch.atan2(v, u)


def _regular_polygon(u: Tensor, v: Tensor, sides: int, apothem: float) -> Tensor:
    """Inside a regular polygon with a vertex pointing up (v is -1 at the top)."""
    rho, theta = _polar(u, v)
    sector = 2 * torch.pi / sides
    local = torch.remainder(theta + torch.pi / 2, sector) - sector / 2
    return rho * torch.cos(local) <= apothem


# Shape masks on coordinates (u, v) scaled so the object's bounding box is [-1, 1]^2 (v points down).
SHAPES: dict[str, ShapeMask] = {
    "disc": lambda u, v: u * u + v * v <= 1.0,
    "ring": lambda u, v: ((u * u + v * v) <= 1.0) & ((u * u + v * v) >= 0.3),
    "half_disc": lambda u, v: (u * u + v * v <= 1.0) & (v <= 0.15),
    "ellipse": lambda u, v: u * u + (v / 0.5) ** 2 <= 1.0,
    "square": lambda u, v: _box(u, v, 0.85),
    "frame": lambda u, v: _box(u, v, 0.95) & ~_box(u, v, 0.55),
    "diamond": lambda u, v: u.abs() + v.abs() <= 1.0,
    "triangle": lambda u, v: (v <= 0.85) & (u.abs() <= 0.55 * (v + 0.95)),
    "plus": lambda u, v: ((u.abs() <= 0.28) | (v.abs() <= 0.28)) & _box(u, v, 0.95),
    "cross": lambda u, v: (((u - v).abs() <= 0.38) | ((u + v).abs() <= 0.38)) & _box(u, v, 0.9),
    "ell": lambda u, v: _box(u, v, 0.9) & ((u <= -0.35) | (v >= 0.35)),
    "tee": lambda u, v: _box(u, v, 0.9) & ((v <= -0.35) | (u.abs() <= 0.28)),
    "checker": lambda u, v: _box(u, v, 0.9) & (_stripes(u, 0.9) ^ _stripes(v, 0.9)),
    "hstripes": lambda u, v: _box(u, v, 0.9) & _stripes(v, 0.6),
    "vstripes": lambda u, v: _box(u, v, 0.9) & _stripes(u, 0.6),
    "dots": lambda u, v: (
        _box(u, v, 0.95)
        & (
            (torch.remainder(u + 1.0, 0.66) - 0.33) ** 2
            + (torch.remainder(v + 1.0, 0.66) - 0.33) ** 2
            <= 0.045
        )
    ),
    "hexagon": lambda u, v: _regular_polygon(u, v, 6, 0.85),
    "octagon": lambda u, v: _regular_polygon(u, v, 8, 0.9),
    "star": lambda u, v: (
        _polar(u, v)[0]
        <= 0.38 + 0.6 * ((1 + torch.cos(5 * _polar(u, v)[1] + torch.pi / 2)) / 2) ** 2
    ),
    "pentagon": lambda u, v: _regular_polygon(u, v, 5, 0.8),
    "crescent": lambda u, v: (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.6),
    "lens": lambda u, v: ((u - 0.55) ** 2 + v * v <= 1.0) & ((u + 0.55) ** 2 + v * v <= 1.0),
    "quarter_disc": lambda u, v: (
        ((u + 0.9) ** 2 + (v - 0.9) ** 2 <= 3.3) & (u >= -0.9) & (v <= 0.9)
    ),
    "oval_ring": lambda u, v: (u * u + (v / 0.6) ** 2 <= 1.0) & (u * u + (v / 0.6) ** 2 >= 0.4),
    "hbar": lambda u, v: (v.abs() <= 0.3) & (u.abs() <= 0.95),
    "vbar": lambda u, v: (u.abs() <= 0.3) & (v.abs() <= 0.95),
    "slash": lambda u, v: ((u + v).abs() <= 0.4) & _box(u, v, 0.9),
    "equals": lambda u, v: (
        (((v - 0.45).abs() <= 0.2) | ((v + 0.45).abs() <= 0.2)) & (u.abs() <= 0.9)
    ),
    "grid": lambda u, v: (
        _box(u, v, 0.95)
        & ((torch.remainder(u + 1.0, 0.62) < 0.2) | (torch.remainder(v + 1.0, 0.62) < 0.2))
    ),
    "dstripes": lambda u, v: _box(u, v, 0.9) & _stripes(u + v, 0.8),
    "target": lambda u, v: (
        (_polar(u, v)[0] <= 1.0) & (torch.remainder(_polar(u, v)[0], 0.5) < 0.25)
    ),
    "zigzag": lambda u, v: (
        (u.abs() <= 0.95)
        & ((v - 2.0 * ((torch.remainder(u + 1.0, 0.8) - 0.4).abs() - 0.2)).abs() <= 0.24)
    ),
}

CELLS = 4  # the standard 2x2 grid: at most four objects, never overlapping
DENSE_GRID = 3  # the dense scenes' 3x3 grid
DENSE_MAX_TOTAL = 6  # objects per dense scene, correlated additions included
NOISE_BANK = 32
NOISE_LEVEL = 0.04


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, vectorised over uint64 (wrap-around arithmetic is intended)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class SyntheticScenes(Dataset[tuple[Tensor, Tensor]]):
    """Procedural multi-label scenes over a shape taxonomy.

    Standard: 20 labels in two levels (4 groups, 16 shapes), a 2x2 grid. Dense (``dense=True``):
    44 labels in three levels (4 kinds, 8 groups, 32 shapes), a 3x3 grid.

    Args:
        n: number of images in this split.
        size: image side in pixels: even and >= 16 (standard, default 64), a multiple of 3 and
            >= 24 (dense, default 48).
        seed: dataset seed; ``(seed, split, index)`` fixes an image completely.
        split: ``"train"``, ``"val"`` or ``"test"`` (independent streams of images).
        min_objects, max_objects: the number of independently chosen shapes per image (default
            1-3, standard, where a correlated addition may bring one more, up to four; 2-5, dense,
            up to six). ``None`` takes the default.
        correlated_pairs: ``(A, B)`` leaf pairs; when ``A`` is drawn, ``B`` joins with probability
            ``correlation`` (if the scene has room).
        correlation: that probability.
        dense: the dense scenes (see the module docstring).

    Yields ``(image float [3, size, size] in [0, 1], labels float [C] of 0/1)``; labels are the
    kinds (dense only), the groups, then the leaves (``label_names``), a parent on whenever one of
    its children is.
    """

    def __init__(
        self,
        n: int,
        *,
        size: int | None = None,
        seed: int = 0,
        split: str = "train",
        min_objects: int | None = None,
        max_objects: int | None = None,
        correlated_pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
        correlation: float = 0.9,
        dense: bool = False,
    ) -> None:
        check_int(n, "n", minimum=1)
        self.dense = check_bool(dense, "dense")
        self.grid = DENSE_GRID if dense else 2
        self._cells = self.grid * self.grid
        # The most objects a scene holds, correlated additions included.
        self._max_total = DENSE_MAX_TOTAL if dense else CELLS
        smallest = 8 * self.grid
        if size is None:
            size = 48 if dense else 64
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or size < smallest
            or size % self.grid
            or (not dense and size % 2)
        ):
            rule = (
                "a multiple of 3 >= 24 (a 3x3 grid)" if dense else "an even int >= 16 (a 2x2 grid)"
            )
            raise ValueError(f"size must be {rule} of cells, got {size!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        min_objects = (2 if dense else 1) if min_objects is None else min_objects
        max_objects = self._max_total - 1 if max_objects is None else max_objects
        min_objects = check_int(min_objects, "min_objects", minimum=1)
        max_objects = check_int(max_objects, "max_objects", minimum=1)
        if not min_objects <= max_objects <= self._max_total - 1:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= {self._max_total - 1}, "
                f"got {min_objects}, {max_objects}"
            )
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"correlation must be in [0, 1], got {correlation!r}")
        self.n = n
        self.size = size
        self.seed = int(seed)
        self.split = split
        self.min_objects = min_objects
        self.max_objects = max_objects
        self.correlation = float(correlation)
        self.groups = DENSE_GROUPS if dense else GROUPS
        self.kinds: dict[str, tuple[str, ...]] = KINDS if dense else {}
        self.leaf_names: tuple[str, ...] = tuple(
            leaf for leaves in self.groups.values() for leaf in leaves
        )
        self.group_names: tuple[str, ...] = tuple(self.groups)
        self.kind_names: tuple[str, ...] = tuple(self.kinds)
        self.label_names: tuple[str, ...] = self.kind_names + self.group_names + self.leaf_names
        self.correlated_pairs: list[tuple[str, str]] = self._check_pairs(correlated_pairs)
        self._pair_index = torch.tensor(
            [
                [self.leaf_names.index(a), self.leaf_names.index(b)]
                for a, b in self.correlated_pairs
            ],
            dtype=torch.long,
        ).reshape(-1, 2)
        leaf_group = [g for g, leaves in enumerate(self.groups.values()) for _ in leaves]
        self._membership = torch.nn.functional.one_hot(
            torch.tensor(leaf_group), len(self.groups)
        ).float()
        self._kind_membership = torch.zeros(len(self.groups), len(self.kinds))
        for column, groups in enumerate(self.kinds.values()):
            for group in groups:
                self._kind_membership[self.group_names.index(group), column] = 1.0
        self.num_skipped = 0
        self._graph: LabelGraph | None = None
        self._key = int(_splitmix64(np.array([self.seed * 8 + SPLITS[split]], dtype=np.uint64))[0])
        noise = torch.Generator().manual_seed(self.seed)
        self._noise = (torch.rand(NOISE_BANK, 1, size, size, generator=noise) - 0.5) * (
            2 * NOISE_LEVEL
        )
        self._grid = torch.arange(size // self.grid, dtype=torch.float32) + 0.5  # pixel centres
        self._labels: Tensor | None = None

    def _check_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        checked: list[tuple[str, str]] = []
        sources: set[str] = set()
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"a correlated pair needs two leaf names, got {pair!r}")
            a, b = str(pair[0]), str(pair[1])
            for name in (a, b):
                if name not in self.leaf_names:
                    raise ValueError(
                        f"correlated pair {pair!r}: {name!r} is not a leaf {self.leaf_names}"
                    )
            if a == b:
                raise ValueError(f"correlated pair {pair!r} pairs a leaf with itself")
            if a in sources:
                raise ValueError(f"leaf {a!r} starts more than one correlated pair")
            sources.add(a)
            checked.append((a, b))
        return checked

    @property
    def graph(self) -> LabelGraph:
        """The taxonomy: each kind over its groups (dense), each group over its four leaves."""
        if self._graph is None:
            from mlattack.graph import LabelGraph

            edges = [(kind, group) for kind, groups in self.kinds.items() for group in groups]
            edges += [(group, leaf) for group, leaves in self.groups.items() for leaf in leaves]
            self._graph = LabelGraph(self.label_names, edges)
        return self._graph

    @property
    def labels(self) -> Tensor:
        """The float label matrix ``[n, C]`` of the whole split (cheap: no drawing)."""
        if self._labels is None:
            self._labels = self._scene(torch.arange(self.n))[0]
        return self._labels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        images, labels = self.render([index % self.n])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        images, labels = self.render(indices)
        return list(zip(images, labels, strict=True))

    # -- drawing -------------------------------------------------------------------------------

    def _uniforms(self, indices: Tensor, slots: int, offset: int) -> Tensor:
        """Uniform [0, 1) numbers ``[len(indices), slots]``, a pure function of (seed, split, index, slot)."""
        image_keys = _splitmix64(indices.numpy().astype(np.uint64) ^ np.uint64(self._key))
        slot_ids = np.arange(offset, offset + slots, dtype=np.uint64) * np.uint64(
            0xD1B54A32D192ED03
        )
        bits = _splitmix64(image_keys[:, None] + slot_ids[None, :])
        return torch.from_numpy((bits >> np.uint64(11)).astype(np.float64) * 2.0**-53).float()

    def _scene(self, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Labels ``[B, C]`` and object slots: ``leaf [B, cells]`` (-1 = empty), ``present [B, leaves]``."""
        count, cells = len(indices), self._cells
        leaves = len(self.leaf_names)
        u = self._uniforms(indices, 1 + leaves + len(self.correlated_pairs) + cells, 0)
        span = self.max_objects - self.min_objects + 1
        k = self.min_objects + (u[:, 0] * span).long().clamp_max(span - 1)
        # k distinct leaves: the k smallest of independent uniforms, one per leaf
        order = u[:, 1 : 1 + leaves].argsort(dim=1)
        slot = torch.arange(cells)
        chosen = torch.full((count, cells), -1, dtype=torch.long)
        chosen[:, : self.max_objects] = order[:, : self.max_objects]
        chosen = chosen.masked_fill(slot[None, :] >= k[:, None], -1)
        # (masks and one-hot comparisons rather than index_put/index_add: those scale badly with threads)
        present = (chosen[:, :, None] == torch.arange(leaves)[None, None, :]).any(dim=1)
        used = k.clone()
        pair_draws = u[:, 1 + leaves : 1 + leaves + len(self.correlated_pairs)]
        for p, (a, b) in enumerate(self._pair_index.tolist()):
            add = (
                present[:, a]
                & ~present[:, b]
                & (pair_draws[:, p] < self.correlation)
                & (used < self._max_total)
            )
            chosen = torch.where(add[:, None] & (slot[None, :] == used[:, None]), b, chosen)
            present[:, b] |= add
            used += add.long()
        # shuffle which cell holds which object: sort cells by a uniform key
        chosen = chosen.gather(1, u[:, -cells:].argsort(dim=1))
        groups = (present.float() @ self._membership) > 0
        kinds = (groups.float() @ self._kind_membership) > 0
        labels = torch.cat([kinds, groups, present], dim=1).float()
        return labels, chosen, present

    def render(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """Draw a batch: ``(images float [B, 3, S, S] in [0, 1], labels float [B, C])``."""
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if index.numel() and (index.min() < 0 or index.max() >= self.n):
            raise IndexError(f"indices out of range for {self.n} images")
        labels, chosen, _ = self._scene(index)
        count, size = len(index), self.size
        u = self._uniforms(index, 6 + 6 * self._cells, 64)
        background = self._background(u[:, :6])
        half = size // self.grid  # each object lives in its own cell of this side
        leaf = chosen.reshape(-1)  # one slot per (image, cell); -1 = empty
        params = u[:, 6:].reshape(-1, 6)  # scale, dx, dy, hue, saturation, value
        radius = half / 2 * (0.62 + 0.33 * params[:, 0])
        slack = (half / 2 - radius).clamp_min(0.0)
        cx = half / 2 + (2 * params[:, 1] - 1) * slack
        cy = half / 2 + (2 * params[:, 2] - 1) * slack
        colour = _hsv_to_rgb(params[:, 3], 0.55 + 0.45 * params[:, 4], 0.7 + 0.3 * params[:, 5])
        # draw the slots sorted by shape, one vectorised mask per shape, then undo the sort
        order = leaf.argsort(stable=True)
        sizes = torch.bincount(leaf + 1, minlength=len(self.leaf_names) + 1).tolist()
        pieces = [torch.zeros(sizes[0], half, half)]
        start = sizes[0]
        for leaf_id, name in enumerate(self.leaf_names):
            mine = order[start : start + sizes[leaf_id + 1]]
            start += len(mine)
            if len(mine):
                r = radius[mine][:, None, None]
                du = (self._grid[None, None, :] - cx[mine][:, None, None]) / r
                dv = (self._grid[None, :, None] - cy[mine][:, None, None]) / r
                pieces.append(SHAPES[name](du, dv).float())
        masks = (
            torch.cat(pieces).index_select(0, order.argsort()).unsqueeze(1)
        )  # [B*cells, 1, h, h]
        coverage = _tile_cells(masks, count, self.grid)
        paint = _tile_cells(masks * colour[:, :, None, None], count, self.grid)
        images = background * (1.0 - coverage) + paint
        return images.clamp_(0.0, 1.0), labels

    def _background(self, u: Tensor) -> Tensor:
        """Dark low-saturation colour with a gentle linear gradient and bank noise: ``[B, 3, S, S]``."""
        base = _hsv_to_rgb(u[:, 0], 0.35 * u[:, 1], 0.08 + 0.25 * u[:, 2])  # [B, 3]
        ramp = ((torch.arange(self.size) + 0.5) / self.size - 0.5)[None, :]
        angle = u[:, 3:4] * (2 * torch.pi)
        gradient = 0.08 * (
            torch.cos(angle)[:, :, None] * ramp[:, None, :]
            + torch.sin(angle)[:, :, None] * ramp[:, :, None]
        )
        noise = self._noise[(u[:, 4] * NOISE_BANK).long().clamp_max(NOISE_BANK - 1)]
        return base[:, :, None, None] + gradient.unsqueeze(1) + noise


def _tile_cells(cells: Tensor, count: int, grid: int) -> Tensor:
    """``[B*g*g, K, h, h]`` cell images (row-major g x g grid per image) -> ``[B, K, g*h, g*h]``."""
    channels, side = cells.shape[1], cells.shape[-1]
    tiled = cells.view(count, grid, grid, channels, side, side).permute(0, 3, 1, 4, 2, 5)
    return tiled.reshape(count, channels, grid * side, grid * side)


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """Vectorised HSV -> RGB for ``[N]`` tensors in [0, 1]; returns ``[N, 3]``."""
    k = (torch.tensor([5.0, 3.0, 1.0])[None, :] + 6.0 * h[:, None]) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return v[:, None] - v[:, None] * s[:, None] * ramp
