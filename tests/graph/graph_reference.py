"""Slow, obviously-correct reference versions of the consistency rules (``docs/semantics.md``),
written from the definitions with Python sets, one image at a time; and the small graph and the
mask helpers several test modules share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from mlattack.graph import LabelGraph

Edge = tuple[int, int]

# animal -> dog, cat; pet -> dog, cat (two parents each); vehicle -> car, bike; plant alone
ZOO = LabelGraph(
    ["animal", "dog", "cat", "pet", "vehicle", "car", "bike", "plant"],
    [
        ("animal", "dog"),
        ("animal", "cat"),
        ("pet", "dog"),
        ("pet", "cat"),
        ("vehicle", "car"),
        ("vehicle", "bike"),
    ],
)


def mask(graph: LabelGraph, labels: Iterable[str]) -> np.ndarray:
    """The bool mask of ``labels`` (names) over ``graph``."""
    out = np.zeros(len(graph), dtype=bool)
    out[[graph.index(name) for name in labels]] = True
    return out


def named(graph: LabelGraph, values: np.ndarray | torch.Tensor) -> set[str]:
    """The names of the labels set in a mask."""
    array = values.numpy() if isinstance(values, torch.Tensor) else values
    return {graph.names[i] for i in np.flatnonzero(array)}


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


def _strict_ancestors(parents: list[set[int]], members: Iterable[int]) -> set[int]:
    found: set[int] = set()
    stack = list(members)
    while stack:
        for parent in parents[stack.pop()]:
            if parent not in found:
                found.add(parent)
                stack.append(parent)
    return found


def _reached_below(children: list[set[int]], on: Sequence[bool], members: set[int]) -> set[int]:
    """Labels reached downwards from ``members``, going on only through labels that are off."""
    found: set[int] = set()
    stack = list(members)
    while stack:
        for child in children[stack.pop()]:
            if child not in found:
                found.add(child)
                if not on[child]:
                    stack.append(child)
    return found


def reference_repair_turn_off(
    n: int, edges: Sequence[Edge], on: Sequence[bool], targets: Iterable[int]
) -> set[int]:
    """``repair=True`` by naive sweeps: an on label joins when it has a parent the search walked
    through (a member, or an off label above or below the members) and every parent is off or
    in Psi, or when it is an ancestor of a member and every child is off or in Psi."""
    parents, children = neighbour_sets(n, edges)
    psi = set(targets)
    changed = True
    while changed:
        above = _strict_ancestors(parents, psi)
        walked = above | _reached_below(children, on, psi)
        passable = psi | {label for label in walked if not on[label]}
        changed = False
        for c in range(n):
            if c in psi or not on[c]:
                continue
            down = bool(parents[c] & passable) and all(not on[p] or p in psi for p in parents[c])
            up = c in above and all(not on[k] or k in psi for k in children[c])
            if down or up:
                psi.add(c)
                changed = True
    return psi
