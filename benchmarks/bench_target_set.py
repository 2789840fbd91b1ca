"""Speed of ``LabelGraph.consistent_target_set`` (turn-off, |Omega| = 3) on one CPU core.

Two graphs: the OpenImages boxable DAG (601 labels, read from ``../shared/data/openimages`` or
``--openimages DIR``) and a synthetic 10,000-label DAG with multi-parent labels.  Predictions are
random and consistent (random leaves plus all their ancestors); the three targets are random labels
that are on.  Prints images/s of the vectorised closure and of a straightforward per-image Python
BFS (measured on a slice of the batch, results checked equal), and their ratio.

Targets (issue 2): >= 20,000 images/s on OpenImages, >= 2,000 images/s on the 10,000-label DAG.

    python3 benchmarks/bench_target_set.py [--images 10000] [--repeats 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mlattack.graph import LabelGraph  # noqa: E402
from mlattack.graph_sources.openimages import load_openimages_graph  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OPENIMAGES = REPO.parent / "shared" / "data" / "openimages"
TARGETS_PER_IMAGE = 3


def synthetic_dag(n_labels: int, rng: np.random.Generator) -> LabelGraph:
    """A layered DAG: 20 roots, each label a child of a random label of the layer above,
    and one in ten with a second parent there."""
    layer_sizes = [20]
    while sum(layer_sizes) < n_labels:
        layer_sizes.append(min(layer_sizes[-1] * 4, n_labels - sum(layer_sizes)))
    edges: list[tuple[int, int]] = []
    start = 0
    for above, size in zip(layer_sizes, layer_sizes[1:], strict=False):
        above_ids = np.arange(start, start + above)
        child_ids = np.arange(start + above, start + above + size)
        parents = rng.choice(above_ids, size=size)
        edges += zip(parents.tolist(), child_ids.tolist(), strict=True)
        extra = child_ids[rng.random(size) < 0.1]
        second = rng.choice(above_ids, size=extra.size)
        edges += [
            (int(p), int(c))
            for p, c in zip(second, extra, strict=True)
            if p != parents[c - child_ids[0]]
        ]
        start += above
    return LabelGraph([f"label{i}" for i in range(n_labels)], edges)


def random_batch(
    graph: LabelGraph, n_images: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Consistent predictions (two random leaves per image plus their ancestors, more leaves
    while fewer than three labels are on) and three random on labels per image as targets."""
    leaves = graph.leaves
    ancestors = {int(leaf): graph.ancestors(int(leaf)) for leaf in leaves}
    pred = np.zeros((n_images, len(graph)), dtype=bool)
    targets = np.zeros_like(pred)
    for row in range(n_images):
        n_leaves = 2
        while pred[row].sum() < TARGETS_PER_IMAGE:
            for leaf in rng.choice(leaves, size=n_leaves, replace=False):
                pred[row, leaf] = True
                pred[row, ancestors[int(leaf)]] = True
            n_leaves += 1
        targets[
            row, rng.choice(np.flatnonzero(pred[row]), size=TARGETS_PER_IMAGE, replace=False)
        ] = True
    assert graph.is_consistent(pred).all()
    return pred, targets


def python_bfs_target_set(
    parents: list[list[int]], children: list[list[int]], on: list[bool], targets: list[int]
) -> set[int]:
    """The obvious per-image worklist: when a label joins, re-check its on neighbours."""
    psi = set(targets)
    queue = deque(targets)
    while queue:
        node = queue.popleft()
        for nxt in children[node] + parents[node]:
            if nxt in psi or not on[nxt]:
                continue
            down = any(p in psi for p in parents[nxt]) and all(
                not on[p] or p in psi for p in parents[nxt]
            )
            up = any(c in psi for c in children[nxt]) and all(
                not on[c] or c in psi for c in children[nxt]
            )
            if down or up:
                psi.add(nxt)
                queue.append(nxt)
    return psi


def bench(
    name: str, graph: LabelGraph, n_images: int, repeats: int, rng: np.random.Generator
) -> float:
    pred, targets = random_batch(graph, n_images, rng)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        psi = graph.consistent_target_set(pred, targets)
        times.append(time.perf_counter() - start)
    vectorised = n_images / min(times)

    parents = [graph.parents(i).tolist() for i in range(len(graph))]
    children = [graph.children(i).tolist() for i in range(len(graph))]
    n_baseline = min(n_images, 2000)
    start = time.perf_counter()
    baseline_sets = [
        python_bfs_target_set(
            parents, children, pred[row].tolist(), np.flatnonzero(targets[row]).tolist()
        )
        for row in range(n_baseline)
    ]
    baseline = n_baseline / (time.perf_counter() - start)
    for row, expected in enumerate(baseline_sets):
        assert set(np.flatnonzero(psi[row]).tolist()) == expected, f"mismatch on image {row}"

    sizes = psi.sum(axis=1)
    print(
        f"{name:<28} labels={len(graph):>6} edges={len(graph.edges):>6} images={n_images} "
        f"mean|Psi|={sizes.mean():.2f} max|Psi|={sizes.max()}"
    )
    print(
        f"    vectorised {vectorised:>12,.0f} images/s   python BFS {baseline:>10,.0f} images/s   "
        f"ratio {vectorised / baseline:6.1f}x"
    )
    return vectorised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--openimages", type=Path, default=DEFAULT_OPENIMAGES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)

    hierarchy = args.openimages / "bbox_labels_600_hierarchy.json"
    if hierarchy.exists():
        openimages = load_openimages_graph(hierarchy)
        rate = bench("OpenImages boxable DAG", openimages, args.images, args.repeats, rng)
        print(f"    target >= 20,000 images/s: {'met' if rate >= 20_000 else 'NOT met'}")
    else:
        print(f"OpenImages hierarchy not found at {hierarchy}: skipped")
    synthetic = synthetic_dag(10_000, rng)
    rate = bench("synthetic 10,000-label DAG", synthetic, args.images, args.repeats, rng)
    print(f"    target >= 2,000 images/s: {'met' if rate >= 2_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
