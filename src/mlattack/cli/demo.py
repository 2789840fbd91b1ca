"""`mlattack demo` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="(not implemented yet)")
    parser.set_defaults(func=lambda args: print("mlattack demo: not implemented yet") or 1)
