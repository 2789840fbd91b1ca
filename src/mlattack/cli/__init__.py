"""The ``mlattack`` command line: one sub-command module per task.

Each module in :data:`SUBCOMMANDS` exposes ``register(subparsers)`` which adds its parser and sets
``func`` (called with the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from mlattack import __version__

# Idle OpenMP threads sleep instead of spinning: on a shared or oversubscribed CPU, spinning made
# two-thread attacks and training several times slower. Only effective before torch is imported,
# which is why ``mlattack/__init__`` loads its exports lazily.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SUBCOMMANDS = ("demo", "run", "report", "graph", "train", "convert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlattack",
        description="Semantic-aware adversarial attacks on multi-label image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"mlattack.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the sub-commands (and torch) are imported
        print("\nmlattack: interrupted", file=sys.stderr)
        return 130
    previous_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning(args.command)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\nmlattack {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`mlattack graph show voc | head`): stop quietly, like other tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (ValueError, TypeError, OSError) as exc:
        print(f"mlattack {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        if (exc.name or "").startswith("mlattack"):
            raise  # a broken mlattack module is a bug, not the user's setup
        # an optional library the command needs (timm for a "timm:" backbone, ...)
        print(f"mlattack {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = previous_format


def _one_line_warning(command: str) -> Callable[..., str]:
    """``warnings.formatwarning`` for the command line: ``mlattack CMD: warning: MESSAGE``, one
    line, without Python's file name, line number and source line."""

    def format_warning(message: Warning | str, *_: object, **__: object) -> str:
        return f"mlattack {command}: warning: {' '.join(str(message).split())}\n"

    return format_warning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
