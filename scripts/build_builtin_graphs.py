#!/usr/bin/env python3
"""Regenerate the built-in label graphs (``src/mlattack/graph_sources/builtin/*.json``).

Run after changing ``mlattack.graph_sources.builtin.BUILTIN_SPECS`` or the WordNet tree builder:

    python3 scripts/build_builtin_graphs.py            # all built-in graphs
    python3 scripts/build_builtin_graphs.py voc        # just one

Needs WordNet 3.0 (Debian ``wordnet-base`` or ``nltk.download("wordnet")``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mlattack.graph_sources.builtin import available_builtin, build_builtin

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "src" / "mlattack" / "graph_sources" / "builtin"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", help=f"graphs to rebuild (default: {', '.join(available_builtin())})"
    )
    parser.add_argument("--out-dir", type=Path, default=BUILTIN_DIR, help="where to write")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available_builtin()))
    if unknown:
        parser.error(f"unknown graph(s) {unknown}; available: {', '.join(available_builtin())}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.names or available_builtin():
        graph = build_builtin(name)
        path = args.out_dir / f"{name}.json"
        graph.save(path)
        given = len(graph.metadata["labels"])
        print(
            f"{name}: {len(graph)} nodes ({given} labels + {len(graph) - given} abstract), "
            f"{len(graph.edges)} edges -> {path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
