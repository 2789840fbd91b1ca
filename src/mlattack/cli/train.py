"""`mlattack train` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="(not implemented yet)")
    parser.set_defaults(func=lambda args: print("mlattack train: not implemented yet") or 1)
