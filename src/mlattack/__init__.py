"""mlattack: semantic-aware adversarial attacks on multi-label image classifiers.

The names most users need are importable from here::

    from mlattack import LabelGraph, GMLA, MLAU, MLAC, MLDP, MLALP, evaluate

They load on first use, so ``import mlattack.cli`` can configure the process (threads) before torch
is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The only place the version is written: pyproject.toml reads it from here (see CHANGELOG.md).
__version__ = "0.4.0"

_EXPORTS = {
    "ATTACKS": "mlattack.attacks",
    "Attack": "mlattack.attacks",
    "AttackResult": "mlattack.attacks",
    "GMLA": "mlattack.attacks",
    "MLAC": "mlattack.attacks",
    "MLALP": "mlattack.attacks",
    "MLAU": "mlattack.attacks",
    "MLDP": "mlattack.attacks",
    "build_attack": "mlattack.attacks",
    "LabelGraph": "mlattack.graph",
    "Metrics": "mlattack.metrics",
    "evaluate": "mlattack.metrics",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from mlattack.attacks import ATTACKS as ATTACKS
    from mlattack.attacks import GMLA as GMLA
    from mlattack.attacks import MLAC as MLAC
    from mlattack.attacks import MLALP as MLALP
    from mlattack.attacks import MLAU as MLAU
    from mlattack.attacks import MLDP as MLDP
    from mlattack.attacks import Attack as Attack
    from mlattack.attacks import AttackResult as AttackResult
    from mlattack.attacks import build_attack as build_attack
    from mlattack.graph import LabelGraph as LabelGraph
    from mlattack.metrics import Metrics as Metrics
    from mlattack.metrics import evaluate as evaluate


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mlattack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
