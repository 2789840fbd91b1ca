"""Train the small CNN on dense synthetic scenes that ``mlattack demo`` ships and attacks (part 2).

Writes ``src/mlattack/models/synthetic-dense-small-cnn.pt`` with the demo's own training settings
(``mlattack.cli.demo.DEFAULT_BUDGET``: dense scenes at 48 px, fixed seed), so that the demo needs no
training time; ``mlattack demo --retrain`` runs the same training into its output folder.

Usage: ``python scripts/train_demo_synthetic.py [--out PATH]`` (about 15 CPU-minutes).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from mlattack.cli.demo import PACKAGED_CHECKPOINT, train_synthetic


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGED_CHECKPOINT, help="checkpoint path")
    args = parser.parse_args(argv)
    train_synthetic(args.out, progress=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
