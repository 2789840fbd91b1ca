"""Slow, obviously-correct reference versions of the consistency rules (DESIGN.md §3.1),
written from the definitions with Python sets, one image at a time."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

Edge = tuple[int, int]


def neighbour_sets(n: int, edges: Iterable[Edge]) -> tuple[list[set[int]], list[set[int]]]:
    parents: list[set[int]] = [set() for _ in range(n)]
    children: list[set[int]] = [set() for _ in range(n)]
    for p, c in edges:
        parents[c].add(p)
        children[p].add(c)
    return parents, children


def reference_violations(n: int, edges: Sequence[Edge], on: Sequence[bool]) -> list[bool]:
    parents, children = neighbour_sets(n, edges)
    return [
        bool(on[c])
        and (
            (bool(parents[c]) and not any(on[p] for p in parents[c]))
            or (bool(children[c]) and not any(on[k] for k in children[c]))
        )
        for c in range(n)
    ]


def reference_turn_off(
    n: int, edges: Sequence[Edge], on: Sequence[bool], targets: Iterable[int]
) -> set[int]:
    """Least set containing ``targets`` closed under the down and up rules, by naive sweeps."""
    parents, children = neighbour_sets(n, edges)
    psi = set(targets)
    changed = True
    while changed:
        changed = False
        for c in range(n):
            if c in psi or not on[c]:
                continue
            down = bool(parents[c] & psi) and all(not on[p] or p in psi for p in parents[c])
            up = bool(children[c] & psi) and all(not on[k] or k in psi for k in children[c])
            if down or up:
                psi.add(c)
                changed = True
    return psi


def closure_region(n: int, edges: Sequence[Edge], labels: Iterable[int]) -> set[int]:
    """``labels`` plus all their ancestors and descendants."""
    parents, children = neighbour_sets(n, edges)
    region = set(labels)
    for neighbours in (parents, children):
        stack = list(labels)
        seen: set[int] = set()
        while stack:
            for nxt in neighbours[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        region |= seen
    return region


def random_consistent_prediction(
    n: int, edges: Sequence[Edge], rng: np.random.Generator, n_leaves: int
) -> np.ndarray:
    """Some leaves and all their ancestors on: consistent by construction."""
    parents, children = neighbour_sets(n, edges)
    leaves = [c for c in range(n) if not children[c]]
    chosen = rng.choice(leaves, size=min(n_leaves, len(leaves)), replace=False)
    on = np.zeros(n, dtype=bool)
    stack = [int(c) for c in chosen]
    while stack:
        c = stack.pop()
        if not on[c]:
            on[c] = True
            stack.extend(parents[c])
    return on
