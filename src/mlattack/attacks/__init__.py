"""Multi-label adversarial attacks on one contract (DESIGN §3.2).

``result = GMLA(model, graph, eps=0.01)(images, targets)``; every attack returns an
:class:`AttackResult`. ``ATTACKS`` maps the lower-case names used in configs to the classes and
:func:`build_attack` builds one by name.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from torch import nn

from .apgd import LoopSettings, Schedule, Update, run_apgd
from .apgd_attack import APGDAttack
from .base import Attack, AttackProblem, AttackResult, LoopOutput
from .gmla import GMLA, gmla_direction
from .mla import MLAC, MLAU
from .mlalp import MLALP
from .mldp import MLDP
from .stages import Repair, Sequential, Stage

if TYPE_CHECKING:
    from ..graph import LabelGraph

__all__ = [
    "ATTACKS",
    "GMLA",
    "MLAC",
    "MLALP",
    "MLAU",
    "MLDP",
    "APGDAttack",
    "Attack",
    "AttackProblem",
    "AttackResult",
    "LoopOutput",
    "LoopSettings",
    "Repair",
    "Schedule",
    "Sequential",
    "Stage",
    "Update",
    "build_attack",
    "gmla_direction",
    "run_apgd",
]

ATTACKS: dict[str, type[Attack]] = {
    "mla-u": MLAU,
    "mla-c": MLAC,
    "gmla": GMLA,
    "ml-dp": MLDP,
    "mla-lp": MLALP,
}


def build_attack(
    name: str, model: nn.Module, graph: LabelGraph | None = None, **options: Any
) -> Attack:
    """Build the attack registered as ``name`` (case-insensitive, see ``ATTACKS``).

    ``graph`` is passed only to attacks whose constructor takes one; ``options`` go to the
    constructor (``eps``, ``steps``, ``tau``, ...).
    """
    key = name.strip().lower()
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}")
    cls = ATTACKS[key]
    if "graph" in inspect.signature(cls.__init__).parameters:
        options["graph"] = graph
    return cls(model, **options)
