"""Drawing target sets Ω and choosing the images attacked for each (deterministic given a seed)."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mlattack.experiments.config import MAX_TARGET_SETS, TargetSetSpec

if TYPE_CHECKING:
    from mlattack.graph import LabelGraph


@dataclass(frozen=True)
class TargetSet:
    ts_id: int
    labels: tuple[int, ...]  # label indices, sorted
    image_ids: tuple[int, ...]  # dataset indices attacked for this set, sorted
    n_eligible: int

    @property
    def size(self) -> int:
        return len(self.labels)


def draw_target_sets(
    spec: TargetSetSpec,
    names: Sequence[str],
    *,
    present: np.ndarray,
    leaves: Sequence[int] = (),
    outside: Sequence[int] = (),
    seed: int = 0,
    image_labels: np.ndarray | None = None,
) -> list[tuple[int, ...]]:
    """Target sets (sorted label-index tuples), grouped by size in ascending order.

    ``present`` is a bool ``[C]`` mask of labels present in at least one scanned image; with
    ``spec.only_present`` only those are candidates. ``image_labels`` (bool ``[N, C]``, the labels
    on in each image that may be attacked) is what ``mode: leaves`` draws from.
    """
    index = {n: i for i, n in enumerate(names)}
    if spec.labels is not None:
        unknown = [n for n in spec.labels if n not in index]
        if unknown:
            raise ValueError(f"config key 'target_sets.labels': unknown labels {unknown}")
        pool = sorted({index[n] for n in spec.labels})
    else:
        pool = list(range(len(names)))
    too_big = [k for k in spec.sizes if k > len(pool)]
    if too_big:
        raise ValueError(
            f"config key 'target_sets.sizes': size {too_big[0]} is larger than the "
            f"{len(pool)} labels target sets are drawn from"
        )
    if spec.only_present:
        pool = [c for c in pool if present[c]]
    pool_set = set(pool)
    leaf_pool = [c for c in leaves if c in pool_set]
    outside_pool = [c for c in outside if c in pool_set]
    _check_plan_size(spec, len(pool), len(leaf_pool), len(outside_pool))
    rng = np.random.default_rng(seed)
    sets: list[tuple[int, ...]] = []
    for k in spec.sizes:
        if spec.mode == "combinations":
            drawn = list(itertools.islice(itertools.combinations(pool, k), spec.max_sets))
        elif spec.mode == "random":
            drawn = _random_sets(rng, [pool], [k], spec.draws)
        elif spec.mode == "leaves":
            if image_labels is None:
                raise ValueError("target_sets mode 'leaves' needs the images' labels")
            drawn = _cooccurring_sets(rng, image_labels[:, leaf_pool], leaf_pool, k, spec.draws)
        else:
            n_leaves = _leaf_count(spec, k)
            drawn = _random_sets(
                rng, [leaf_pool, outside_pool], [n_leaves, k - n_leaves], spec.draws
            )
        if not drawn:
            warnings.warn(
                f"no target set of size {k} can be drawn from the candidates", stacklevel=2
            )
        sets.extend(drawn)
    return sets


def _leaf_count(spec: TargetSetSpec, k: int) -> int:
    return min(k, math.ceil(k * spec.leaf_fraction))


def _check_plan_size(spec: TargetSetSpec, n_pool: int, n_leaves: int, n_outside: int) -> None:
    """Refuse, before building any, a plan of more than :data:`MAX_TARGET_SETS` target sets."""
    counts = {}
    for k in spec.sizes:
        if spec.mode == "combinations":
            possible = math.comb(n_pool, k)
            counts[k] = possible if spec.max_sets is None else min(possible, spec.max_sets)
        elif spec.mode == "random":
            counts[k] = min(spec.draws, math.comb(n_pool, k))
        elif spec.mode == "leaves":
            counts[k] = min(spec.draws, math.comb(n_leaves, k))
        else:
            leaf = _leaf_count(spec, k)
            counts[k] = min(spec.draws, math.comb(n_leaves, leaf) * math.comb(n_outside, k - leaf))
    total = sum(counts.values())
    if total > MAX_TARGET_SETS:
        key = "target_sets.max_sets" if spec.mode == "combinations" else "target_sets.draws"
        largest = max(counts, key=lambda k: counts[k])
        raise ValueError(
            f"config key '{key}': the plan has {total:,} target sets (size {largest}: "
            f"{counts[largest]:,} from {n_pool} candidate labels), more than the cap of "
            f"{MAX_TARGET_SETS:,}; set a smaller '{key}' or fewer 'target_sets.sizes'"
        )


LEAF_DRAW_ATTEMPTS = 50  # per set asked for: ``leaves`` stops after draws × this many tries


def _cooccurring_sets(
    rng: np.random.Generator, on: np.ndarray, columns: list[int], k: int, draws: int
) -> list[tuple[int, ...]]:
    """Up to ``draws`` distinct sets of ``k`` of ``columns``, each among the columns one row of
    ``on`` (bool ``[N, len(columns)]``) has on: a random row with at least ``k``, then ``k`` of
    its columns at random."""
    rows = np.flatnonzero(on.sum(axis=1) >= k) if on.size else np.zeros(0, dtype=np.int64)
    seen: set[tuple[int, ...]] = set()
    drawn: list[tuple[int, ...]] = []
    for _ in range(draws * LEAF_DRAW_ATTEMPTS):
        if len(drawn) >= draws or not len(rows):
            break
        row = on[rows[rng.integers(len(rows))]]
        chosen = rng.choice(np.flatnonzero(row), size=k, replace=False)
        labels = tuple(sorted(columns[int(c)] for c in chosen))
        if labels not in seen:
            seen.add(labels)
            drawn.append(labels)
    return drawn


def _random_sets(
    rng: np.random.Generator, pools: list[list[int]], counts: list[int], draws: int
) -> list[tuple[int, ...]]:
    """Up to ``draws`` distinct sets taking ``counts[i]`` labels from ``pools[i]``."""
    if any(len(p) < c for p, c in zip(pools, counts, strict=True)):
        return []
    possible = math.prod(math.comb(len(p), c) for p, c in zip(pools, counts, strict=True))
    if possible <= draws:
        parts = [itertools.combinations(p, c) for p, c in zip(pools, counts, strict=True)]
        return [tuple(sorted(itertools.chain(*combo))) for combo in itertools.product(*parts)]
    seen: set[tuple[int, ...]] = set()
    drawn: list[tuple[int, ...]] = []
    while len(drawn) < draws:
        chosen = [
            rng.choice(p, size=c, replace=False) for p, c in zip(pools, counts, strict=True) if c
        ]
        labels = tuple(sorted(int(x) for x in np.concatenate(chosen)))
        if labels not in seen:
            seen.add(labels)
            drawn.append(labels)
    return drawn


def eligible_images(
    labels: tuple[int, ...],
    clean_pred: np.ndarray,
    ground_truth: np.ndarray | None,
    *,
    graph: LabelGraph | None = None,
    require_consistent: bool = False,
) -> np.ndarray:
    """Indices (into the scanned images) whose clean prediction and ground truth contain Ω."""
    columns = list(labels)
    ok = clean_pred[:, columns].all(axis=1)
    if ground_truth is not None:
        ok &= ground_truth[:, columns].all(axis=1)
    candidates = np.flatnonzero(ok)
    if require_consistent and len(candidates):
        assert graph is not None
        around = np.zeros((len(candidates), clean_pred.shape[1]), dtype=bool)
        around[:, columns] = True
        consistent = np.asarray(
            graph.is_consistent(clean_pred[candidates], around=around), dtype=bool
        )
        candidates = candidates[consistent]
    return candidates


def choose_images(candidates: np.ndarray, limit: int, *, seed: int, ts_id: int) -> tuple[int, ...]:
    """A seeded random choice of at most ``limit`` candidates, returned sorted."""
    if len(candidates) <= limit:
        return tuple(int(i) for i in candidates)
    rng = np.random.default_rng([seed, ts_id])
    picked = rng.choice(candidates, size=limit, replace=False)
    return tuple(sorted(int(i) for i in picked))
