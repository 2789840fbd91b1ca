"""Executing the planned units: one module per kind (attack, gradcorr, transfer).

``execute(unit, context)`` returns the records to commit with the unit; it is deterministic (the
torch seed is reset per unit), so a unit gives the same rows on any rank and on any resume.
"""

from __future__ import annotations

import torch

from mlattack.experiments.planning import AttackUnit, GradcorrUnit, Unit
from mlattack.experiments.units.attack import run_attack
from mlattack.experiments.units.context import Records, UnitContext, configured_attack
from mlattack.experiments.units.gradcorr import run_gradcorr
from mlattack.experiments.units.transfer import run_transfer


def execute(unit: Unit, context: UnitContext) -> Records:
    """The records of ``unit`` (store table -> rows)."""
    torch.manual_seed(context.config.seed)
    if isinstance(unit, AttackUnit):
        return run_attack(unit, context)
    if isinstance(unit, GradcorrUnit):
        return run_gradcorr(unit, context)
    return run_transfer(unit, context)


__all__ = ["Records", "UnitContext", "configured_attack", "execute"]
