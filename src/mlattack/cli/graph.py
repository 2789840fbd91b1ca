"""`mlattack graph` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("graph", help="(not implemented yet)")
    parser.set_defaults(func=lambda args: print("mlattack graph: not implemented yet") or 1)
