"""`mlattack run CONFIG [--out DIR]`: run or resume an experiment into a results store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run (or resume) an experiment from a YAML config",
        description="Attack the configured model on every target set and store one row per "
        "(target set, image, attack, eps). Rerunning on the same output directory resumes. Under "
        "torchrun each rank takes a disjoint share of the work and writes its own store.",
    )
    parser.add_argument("config", type=Path, help="experiment YAML file (see configs/)")
    parser.add_argument(
        "--out", type=Path, default=None, help="run directory (default: runs/<config name>)"
    )
    parser.add_argument(
        "--force", action="store_true", help="delete earlier results in the run directory first"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="override the config's device: auto (CUDA when present), cpu, cuda, cuda:N, mps",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mlattack.experiments.config import ExperimentConfig
    from mlattack.experiments.layout import find_stores
    from mlattack.experiments.runner import run_experiment

    config = ExperimentConfig.from_yaml(args.config)
    if args.device is not None:
        config = config.with_device(args.device)
    # The config's name is a plain folder name (validated), so the default stays inside runs/.
    out = args.out if args.out is not None else Path("runs") / config.name
    try:
        run_dir = run_experiment(
            config,
            out,
            progress=not args.no_progress,
            force=args.force,
            base_dir=args.config.resolve().parent,
        )
    except KeyboardInterrupt:
        if out.is_dir() and find_stores(out):
            print(f"\ninterrupted; rerun the same command to resume into {out}", file=sys.stderr)
        else:
            print("\ninterrupted before any result was stored", file=sys.stderr)
        return 130
    print(f"results in {run_dir}; next: mlattack report {run_dir}")
    return 0
