"""`mlattack report RUN_DIR [RUN_DIR ...]`: tables, figures and an HTML page from stored results."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the paper's tables and figures (CSV, JSON, PNG, HTML) for one or more runs",
        description="Aggregate the stored results (per target set, then mean ± std across target "
        "sets). Several run directories (e.g. one per model) are reported together.",
    )
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: RUN_DIR/report)"
    )
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from mlattack.experiments.report import build_report

    page = build_report(*args.run_dirs, out_dir=args.out)
    print(f"report: {page}")
    return 0
