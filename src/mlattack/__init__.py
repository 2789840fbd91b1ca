"""mlattack: semantic-aware adversarial attacks on multi-label image classifiers.

The names most users need are importable from here::

    from mlattack import LabelGraph, GMLA, MLAU, MLAC, MLDP, MLALP, evaluate
"""

from mlattack.attacks import ATTACKS, GMLA, MLAC, MLAU, Attack, AttackResult, build_attack
from mlattack.graph import LabelGraph
from mlattack.metrics import Metrics, evaluate

__version__ = "0.1.0"

__all__ = [
    "ATTACKS",
    "GMLA",
    "MLAC",
    "MLAU",
    "Attack",
    "AttackResult",
    "LabelGraph",
    "Metrics",
    "build_attack",
    "evaluate",
]
