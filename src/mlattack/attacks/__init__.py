"""Multi-label adversarial attacks on one contract (:class:`~mlattack.attacks.base.Attack`).

``result = GMLA(model, graph, eps=0.01)(images, targets)``; every attack returns an
:class:`AttackResult`. The registry (:mod:`mlattack.attacks.registry`) holds every attack by the
lower-case name configs use; :func:`build_attack` builds one by name, and ``ATTACKS`` maps names to
classes. Adding an attack: one file and one :func:`register_attack` call below
(``docs/adding-an-attack.md``).
"""

from __future__ import annotations

from .apgd import LoopSettings, Schedule, Update, run_apgd
from .apgd_attack import APGDAttack
from .base import Attack, AttackProblem, AttackResult, LoopOutput
from .gmla import GMLA, gmla_direction
from .mla import MLAC, MLAU
from .mlalp import MLALP
from .mldp import MLDP
from .registry import ATTACKS, REGISTRY, AttackEntry, attack_entry, build_attack, register_attack
from .stages import Repair, Sequential, Stage

__all__ = [
    "ATTACKS",
    "GMLA",
    "MLAC",
    "MLALP",
    "MLAU",
    "MLDP",
    "REGISTRY",
    "APGDAttack",
    "Attack",
    "AttackEntry",
    "AttackProblem",
    "AttackResult",
    "LoopOutput",
    "LoopSettings",
    "Repair",
    "Schedule",
    "Sequential",
    "Stage",
    "Update",
    "attack_entry",
    "build_attack",
    "gmla_direction",
    "register_attack",
    "run_apgd",
]

# Step costs relative to an MLA-U step, measured (they only balance the work between ranks).
register_attack("mla-u", MLAU, step_cost=1.0)
register_attack("mla-c", MLAC, step_cost=1.0)
register_attack("gmla", GMLA, step_cost=1.7)
register_attack("ml-dp", MLDP, step_cost=4.0)
register_attack("mla-lp", MLALP, step_cost=6.0)
