"""Depth-linear work stays fast (issue 17: a 500,000-deep chain took over 30 s to load).

A deep chain and a star (one root over every other label) have the same number of labels and
edges: loading, querying and contracting each must cost about the same (a fixed cost per layer
made the chain 10x slower). The bound is generous against timing noise on a loaded machine and
still catches that.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from mlattack.graph import JSON_SCHEMA, JSON_VERSION, LabelGraph

LABELS = 50_000
#: chain time / star time; a cost per layer measured 10x at this size.
MAX_DEPTH_RATIO = 4.0


def names(n: int) -> list[str]:
    return [f"label{i}" for i in range(n)]


def write_graph(path: Path, edges: list[tuple[int, int]]) -> Path:
    labels = names(LABELS)
    document = {
        "schema": JSON_SCHEMA,
        "version": JSON_VERSION,
        "names": labels,
        "edges": [[labels[p], labels[c]] for p, c in edges],
    }
    path.write_text(json.dumps(document))
    return path


def seconds(work: Callable[[], object]) -> float:
    """The faster of two runs (the first may pay for caches and allocation)."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def load_and_query(path: Path) -> LabelGraph:
    graph = LabelGraph.load(path)
    graph.ancestors(LABELS - 1)
    graph.descendants(0)
    graph.subgraph(list(range(0, LABELS, 2)))
    return graph


def test_a_deep_chain_loads_and_answers_about_as_fast_as_a_star(tmp_path: Path) -> None:
    chain = write_graph(tmp_path / "chain.json", [(i, i + 1) for i in range(LABELS - 1)])
    star = write_graph(tmp_path / "star.json", [(0, i) for i in range(1, LABELS)])
    graph = load_and_query(chain)
    assert graph.depth(LABELS - 1) == LABELS - 1
    assert graph.ancestors(LABELS - 1).tolist() == list(range(LABELS - 1))
    assert graph.descendants(0).tolist() == list(range(1, LABELS))
    halved = graph.subgraph(list(range(0, LABELS, 2)))
    assert halved.depth(len(halved) - 1) == len(halved) - 1  # every other link contracted
    chain_time = seconds(lambda: load_and_query(chain))
    star_time = seconds(lambda: load_and_query(star))
    assert chain_time < MAX_DEPTH_RATIO * star_time, (chain_time, star_time)
